"""``mlops demo --family``: the spec the demo submits trains the family asked for, and the
trainer accepts it for the demo's dataset (numbers only, so the booster families fit)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.cli.demo.spec import demo_schema, demo_spec
from services.trainer.plan import make_plan


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_a_demo_family_is_the_only_one_trained(family: str) -> None:
    plan = make_plan(demo_spec("demo-classifier", datetime.now(UTC), family), demo_schema())
    assert [c.family.name for c in plan.candidates] == [family]
    assert plan.candidates[0].family.flavor == family


def test_without_a_family_the_demo_searches_its_two_default_families() -> None:
    plan = make_plan(demo_spec("demo-classifier", datetime.now(UTC)), demo_schema())
    assert [c.family.name for c in plan.candidates] == ["logistic_regression", "hist_gradient_boosting"]
