"""The console's settings and its modules' docstring examples."""

from __future__ import annotations

import doctest
import importlib

import pytest
from pydantic import ValidationError

from services.console.settings import ConsoleSettings


def test_defaults_are_the_documented_ones_and_need_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for held in ("MLOPS_AUTH_PUBLIC_KEYS", "MLOPS_SERVICE_KEY"):
        monkeypatch.delenv(held, raising=False)
    settings = ConsoleSettings()
    assert settings.http_port == 8090 and settings.secure_cookies is True
    assert settings.monitor_urls == ["http://127.0.0.1:8082"]
    assert not {"auth_public_keys", "service_key", "mongodb_uri"} & set(ConsoleSettings.model_fields)


def test_several_monitors_come_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_MONITOR_URLS", '["http://m1:8082", "https://m2:8082"]')
    assert ConsoleSettings().monitor_urls == ["http://m1:8082", "https://m2:8082"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONSOLE_MONITOR_URLS", '["monitor:8082"]'),
        ("CONSOLE_MONITOR_URLS", "[]"),
        ("CONSOLE_INGEST_URL", "ftp://ingest"),
        ("CONSOLE_SESSION_KEY", "short"),
        ("CONSOLE_SESSION_TTL_SECONDS", "10"),
    ],
)
def test_a_bad_value_stops_start_up_naming_it(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("CONSOLE_").lower()):
        ConsoleSettings()


@pytest.mark.parametrize(
    "module",
    [
        "services.console.session",
        "services.console.compare",
        "services.console.charts",
        "services.console.jobs",
        "services.console.lineage",
        "services.console.filters",
        "services.console.routes.actions",
        "services.console.routes.models",
        "services.console.routes.sign_in",
        "services.common.train_requests",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
