"""The platform's promise, end to end: every service its own process on a real broker and
database; events in, a model trained, promoted and served; a concept drift detected online;
exactly one retrain; the new version swapped in while traffic runs, without a failed request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from services.cli.demo import ClosedLoopDemo, DemoConfig, endpoints_of
from services.cli.stack import ALL_SERVICES, LocalStack, StackPorts

pytestmark = pytest.mark.e2e


def test_the_loop_closes_by_itself(tmp_path: Path) -> None:
    config = DemoConfig()
    with LocalStack(tmp_path, StackPorts.free()) as stack:
        assert sorted(stack.processes) == sorted(["kafka", "mongodb", *ALL_SERVICES])
        assert len({p.pid for p in stack.processes.values()}) == len(stack.processes)
        report = asyncio.run(ClosedLoopDemo(endpoints_of(stack), config, Console(stderr=True)).run())

    assert report.loop_closed, report.verdict
    assert report.first_version >= 1
    assert report.accuracy_before_drift > 0.85
    # The new concept is orthogonal to the old one: the old model falls to chance.
    assert report.accuracy_after_drift_old_model < 0.65
    assert report.new_version > report.first_version
    assert report.accuracy_after_swap > report.accuracy_after_drift_old_model + config.min_accuracy_gain
    assert report.retrain_requests == 1
    # The monitor needed few post-change samples, and placed the change where it happened,
    # so the retrain learned the new concept only.
    assert 0 < report.detection_delay_samples <= 500
    assert abs(report.onset_error_samples) <= 250
    assert report.new_version_gates and all(report.new_version_gates.values())
    assert report.failed_requests == 0
