"""The search trials a version's params record, read back as the trainer wrote them."""

from __future__ import annotations

from services.common.trials import recorded_trials, trials_key


def test_trials_are_read_in_key_order_past_the_other_params() -> None:
    params = {trials_key(1): '[{"score": 2}]', trials_key(0): '[{"score": 1}, 3]', "family": "x"}
    assert trials_key(0) == "search.trials.000"
    assert recorded_trials(params) == [{"score": 1}, {"score": 2}]


def test_an_unreadable_record_gives_none_rather_than_a_part() -> None:
    assert recorded_trials({trials_key(0): '[{"score": 1}]', trials_key(1): "[{"}) == []
    assert recorded_trials({trials_key(0): '{"score": 1}'}) == []
