"""docs/operations.md carries the configuration reference generated from the settings
classes; it must say what the code reads, no more and no less."""

from __future__ import annotations

import pytest

from services.cli.config_reference import SERVICES, embed, render, settings_class
from services.common.settings import ServiceSettings
from tests.deploy.conftest import ROOT, service_env_names

OPERATIONS = ROOT / "docs" / "operations.md"


def test_the_configuration_reference_is_current() -> None:
    document = OPERATIONS.read_text()
    assert embed(document, render()) == document, (
        "docs/operations.md is stale: run `mlops config reference --write docs/operations.md`"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_of_every_service_is_documented(service: str) -> None:
    reference = render()
    for variable in service_env_names(settings_class(service)):
        row = next((line for line in reference.splitlines() if line.startswith(f"| `{variable}` |")), None)
        assert row is not None, f"{variable} missing from the reference"
        meaning = row.rsplit("|", 2)[-2].strip()
        assert meaning, f"{variable}: its settings field has no docstring"


def test_platform_variables_appear_once() -> None:
    reference = render()
    for variable in service_env_names(ServiceSettings):
        assert reference.count(f"| `{variable}` |") == 1, variable


def test_embedding_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        embed("# no markers here\n", render())


def test_the_readme_points_operators_to_the_guide() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
