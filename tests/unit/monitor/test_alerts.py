"""The alert webhook refuses targets inside private networks, and schemes not allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.alerts import check_target
from services.monitor.settings import MonitorSettings
from tests.helpers.keys import KEYS


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://alerts.example.com/hook", "scheme 'http' is not allowed"),
        ("ftp://alerts.example.com/hook", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("https:///no-host", "no host"),
        ("https://user:pw@alerts.example.com/hook", "credentials in the URL"),
        ("https://alerts.example.com:99999/hook", "not a URL"),
        ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("https://[::1]/hook", "::1 is a loopback address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://192.168.0.10/hook", "is a private address"),
        ("https://172.16.5.4/hook", "is a private address"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("https://[fe80::1]/hook", "is a link-local address"),
        ("https://[::ffff:10.0.0.1]/hook", "is a private address"),
        ("https://0.0.0.0/hook", "is an unspecified address"),
        ("https://224.0.0.1/hook", "is a multicast address"),
    ],
)
def test_forbidden_targets_are_refused_naming_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_target(url, ["https"], allow_private=False, resolver=resolving_to("93.184.216.34"))


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"'hooks.internal' resolves to 10.0.0.7, which is a private address"
    ):
        check_target(
            "https://hooks.internal/x",
            ["https"],
            allow_private=False,
            resolver=resolving_to("93.184.216.34", "10.0.0.7"),
        )


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(ValueError, match="cannot resolve 'nowhere.example'"):
        check_target("https://nowhere.example/x", ["https"], allow_private=False, resolver=failing)


def test_public_targets_pass_and_private_ones_only_when_allowed() -> None:
    check_target(
        "https://alerts.example.com/x", ["https"], allow_private=False, resolver=resolving_to("93.184.216.34")
    )
    check_target("http://127.0.0.1:9/x", ["http"], allow_private=True)


def test_the_settings_refuse_a_bad_webhook_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", KEYS.public_keys)
    monkeypatch.setenv("MONITOR_ALERT_WEBHOOK_URL", "gopher://alerts.example.com/")
    with pytest.raises(ValidationError, match="scheme 'gopher' is not allowed"):
        MonitorSettings()
    monkeypatch.setenv("MONITOR_ALERT_WEBHOOK_URL", "https://hooks.example.com/T0/secret-token")
    settings = MonitorSettings()
    # The URL is a secret: it never shows in a repr or a log line.
    assert "secret-token" not in repr(settings)
