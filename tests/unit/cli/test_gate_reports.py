"""Gate reports as ``mlops models`` shows them: every gate with its margin, signed so that
a positive margin is what it passed by and a negative one what it failed by, whichever
way the gate points; failed gates highlighted; ``--json`` with every field."""

from __future__ import annotations

import pytest
from rich.console import Console

from services.cli.models import (
    gate_json,
    gates_failed,
    gates_table,
    headline_metrics,
    message_json,
)
from services.common.clients.registry import gate_margin
from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus
from services.common.proto.mlops.v1.model_pb2 import GateResult
from services.common.proto.mlops.v1.registry_pb2 import ModelVersion

# The gates of one real report (docs/trainer.md): a floor on the metric, a floor on the
# gain over production, and ceilings on drops and gaps.
FLOOR_PASSED = GateResult(name="min_metric", passed=True, value=0.9233, threshold=0.8)
CHALLENGER_FAILED = GateResult(
    name="challenger",
    passed=False,
    value=-0.0167,
    threshold=-0.01,
    detail="accuracy 0.9233 vs production v3 0.9400 on the same holdout: 0.0167 worse; may be at most 0.0100 worse",
)
DROP_PASSED = GateResult(name="noise_robustness", passed=True, value=0.0022, threshold=0.02)
GAP_FAILED = GateResult(name="slice_gap:color", passed=False, value=0.2, threshold=0.15)
CEILING_FAILED = GateResult(name="min_metric", passed=False, value=0.61, threshold=0.5)  # log_loss


@pytest.mark.parametrize(
    "gate, margin",
    [
        (FLOOR_PASSED, 0.1233),
        (CHALLENGER_FAILED, -0.0067),
        (DROP_PASSED, 0.0178),
        (GAP_FAILED, -0.05),
        (CEILING_FAILED, -0.11),
        (GateResult(name="challenger", passed=True, detail="not compared"), 0.0),
    ],
)
def test_the_margin_is_positive_by_what_a_gate_passed_and_negative_by_what_it_failed(
    gate: GateResult, margin: float
) -> None:
    assert gate_margin(gate) == pytest.approx(margin)


def test_failed_gates_are_named_with_how_much_they_missed_by() -> None:
    gates = [FLOOR_PASSED, CHALLENGER_FAILED, DROP_PASSED, GAP_FAILED]
    assert gates_failed(gates) == "challenger by 0.0067, slice_gap:color by 0.0500"
    assert gates_failed([FLOOR_PASSED]) == ""


def test_the_table_has_every_gate_and_highlights_the_failed_ones() -> None:
    table = gates_table([FLOOR_PASSED, CHALLENGER_FAILED, DROP_PASSED])
    assert [column.header for column in table.columns] == "gate result value threshold margin detail".split()
    assert [row.style for row in table.rows] == [None, "bold red", None]
    console = Console(width=250, record=True, color_system=None)
    console.print(table)
    lines = console.export_text().splitlines()
    challenger = next(line for line in lines if "challenger" in line)
    assert "FAIL" in challenger and "-0.0167" in challenger and "-0.0100" in challenger
    assert "-0.0067" in challenger and "0.0167 worse; may be at most 0.0100 worse" in challenger
    floor = next(line for line in lines if "min_metric" in line)
    assert "pass" in floor and "+0.1233" in floor


def test_a_gate_name_is_printed_as_text_not_as_console_markup() -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(gates_table([GateResult(name="slice_gap:[bold]x[/bold]", passed=True)]))
    assert "slice_gap:[bold]x[/bold]" in console.export_text()


def test_json_has_every_field_of_every_gate_with_its_margin() -> None:
    version = ModelVersion(model_name="m", version=3, gates=[FLOOR_PASSED, CHALLENGER_FAILED])
    document = message_json(version)
    assert document["version"] == 3  # a number, as the REST API returns it
    assert document["gates"][1] == {
        "name": "challenger",
        "passed": False,  # proto3 JSON would leave a false out
        "value": -0.0167,
        "threshold": -0.01,
        "margin": pytest.approx(-0.0067),
        "detail": CHALLENGER_FAILED.detail,
    }
    result = TrainResult(
        model_name="m", status=TrainStatus.TRAIN_STATUS_GATES_FAILED, version=4, gates=[GAP_FAILED]
    )
    assert message_json(result)["gates"] == [gate_json(GAP_FAILED)]
    assert "gates" not in message_json(ModelVersion(model_name="m", version=1))


def test_tables_show_the_holdout_metrics_and_leave_the_measurements_to_the_report() -> None:
    metrics = {"accuracy": 0.92, "importance.f0": 0.1, "robustness.noise_drop": 0.02, "train_rows": 300.0}
    assert headline_metrics(metrics) == "accuracy=0.92, train_rows=300"
