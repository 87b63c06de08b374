"""The federation spec: what a run accepts, and a refusal naming the field for everything else."""

from __future__ import annotations

import doctest

import pytest

from services.federation import spec as spec_module
from services.federation.protocol import instruction, read_instruction
from services.federation.spec import FederationSpec, SpecError

MINIMAL = {"model_name": "clinics", "features": ["a", "b"], "target": "y", "classes": ["0", "1"]}


def test_doctests() -> None:
    assert doctest.testmod(spec_module).failed == 0


def test_defaults_are_secure_aggregation_and_privacy_on() -> None:
    spec = FederationSpec.parse(MINIMAL)
    assert spec.secure_aggregation.enabled and spec.privacy.enabled
    assert spec.weighting == "uniform"  # a site's influence must be bounded under privacy
    assert spec.dataset_name == "clinics-sites"


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        ({"features": []}, "features", "at least 1"),
        ({"features": ["a", "a"]}, "features", "twice"),
        ({"classes": ["0"]}, "classes", "at least 2"),
        ({"target": "a"}, "target", "cannot also be a feature"),
        ({"model_name": "../etc"}, "model_name", "pattern"),
        ({"privacy": {"noise_multiplier": 0}}, "privacy.noise_multiplier", "> 0"),
        ({"model": {"family": "xgboost"}}, "model.family", "logistic_regression"),
        ({"model": {"hidden_layers": [0]}}, "model.hidden_layers", "1 to 4096"),
        ({"strategy": {"min_sites": 1}}, "strategy.min_sites", "greater than or equal to 2"),
        ({"strategy": {"rounds": 0}}, "strategy.rounds", "greater than or equal to 1"),
        ({"surprise": 1}, "surprise", "not permitted"),
    ],
)
def test_refusals_name_the_field(change: dict[str, object], field: str, phrase: str) -> None:
    with pytest.raises(SpecError) as caught:
        FederationSpec.parse({**MINIMAL, **change})
    assert caught.value.field == field
    assert phrase in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_yaml_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(SpecError, match="mapping"):
        FederationSpec.from_yaml("- a\n- b\n")
    with pytest.raises(SpecError, match="YAML"):
        FederationSpec.from_yaml("a: [\n")


def test_an_instruction_carries_the_spec_and_a_site_checks_it() -> None:
    spec = FederationSpec.parse(MINIMAL)
    config = instruction(spec, round_number=3)
    assert config["clipping_norm"] == spec.privacy.clipping_norm
    read = read_instruction(config)
    assert read.spec == spec and read.round == 3
    assert "clipping_norm" not in instruction(spec)  # queries and evaluations clip nothing


@pytest.mark.parametrize(
    ("config", "phrase"),
    [
        ({}, "carries no"),
        ({"spec": "{"}, "not JSON"),
        ({"spec": "[]"}, "not an object"),
        ({"spec": '{"model_name": "x"}'}, "features"),
        ({"spec": FederationSpec.parse(MINIMAL).to_json(), "round": -1}, "round"),
    ],
)
def test_a_site_refuses_a_malformed_instruction(config: dict[str, object], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        read_instruction(config)
