"""``mlops models train`` without a platform: specs read from JSON and YAML, windows and
requests built from the options, outcomes mapped to exit codes, and every bad option
refused before anything is sent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.__main__ import app
from services.cli.output import ExitCode
from services.cli.train import TrainProgress, outcome, read_spec_file
from services.common.localstack import free_port
from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, GateResult, ModelSpec, Task
from services.common.train_requests import parse_duration, train_request

runner = CliRunner()

SPEC_YAML = """\
dataset: credit
task: classification
features: [f0, f1, color]
metric: accuracy
estimators:
  - family: logistic_regression
    search_space_json: '{"C": {"low": 0.1, "high": 10, "log": true}}'
gates: {min_metric: 0.7, max_regression: 0.01}
window: {max_rows: 400}
"""


@pytest.fixture(autouse=True)
def no_local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands must not pick up a stack someone runs in the checkout."""
    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("MLOPS_TOKEN", raising=False)
    monkeypatch.delenv("MLOPS_KAFKA_BOOTSTRAP_SERVERS", raising=False)


def test_a_yaml_spec_reads_as_the_same_message_as_its_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text(SPEC_YAML)
    spec = read_spec_file(yaml_file)
    assert spec.task == Task.TASK_CLASSIFICATION  # written short
    assert list(spec.features) == ["f0", "f1", "color"]
    assert spec.estimators[0].family == "logistic_regression"
    assert (spec.gates.min_metric, spec.window.max_rows) == (0.7, 400)
    json_file = tmp_path / "spec.json"
    json_file.write_text(
        '{"dataset": "credit", "task": "TASK_CLASSIFICATION", "features": ["f0", "f1", "color"],'
        ' "metric": "accuracy", "estimators": [{"family": "logistic_regression", "search_space_json":'
        ' "{\\"C\\": {\\"low\\": 0.1, \\"high\\": 10, \\"log\\": true}}"}],'
        ' "gates": {"min_metric": 0.7, "max_regression": 0.01}, "window": {"max_rows": 400}}'
    )
    assert read_spec_file(json_file) == spec


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("spec.yaml", "dataset: [unclosed", "spec.yaml"),
        ("spec.yaml", "- a list\n- not a spec\n", "expected a ModelSpec object"),
        ("spec.json", '{"dataset": "credit",}', "spec.json"),
        ("spec.json", '{"datset": "credit"}', "datset"),
        ("spec.yaml", "task: clustering\n", "clustering"),
        ("spec.yaml", "gates: {min_metric: high}\n", "min_metric"),
        # YAML tags that would build Python objects are refused (safe_load).
        ("spec.yaml", "dataset: !!python/object/apply:os.system ['true']\n", "spec.yaml"),
    ],
)
def test_a_bad_spec_file_is_refused_naming_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match="spec") as refused:
        read_spec_file(path)
    assert message in str(refused.value)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration(" 1.5D ") == timedelta(days=1.5)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("0h", "-1d", "7", "d", "1y", "1e3s"):
        with pytest.raises(ValueError, match="positive duration"):
            parse_duration(bad)


def test_a_request_carries_only_what_was_asked_for() -> None:
    bare = train_request("churn", requested_by="cli:ann")
    assert bare.model_name == "churn" and len(bare.request_id) == 32
    assert not bare.HasField("spec") and not bare.HasField("window")  # the trainer's default spec
    assert bare.trigger == TrainTrigger.TRAIN_TRIGGER_MANUAL and bare.requested_by == "cli:ann"
    assert bare.requested_at.seconds > 0
    assert train_request("churn").request_id != bare.request_id
    full = train_request(
        "churn",
        spec=ModelSpec(dataset="credit"),
        window=DataWindow(max_rows=100),
        request_id="r1",
        idempotency_key="nightly-2026-11-26",
        trigger=TrainTrigger.TRAIN_TRIGGER_SCHEDULED,
    )
    assert (full.request_id, full.idempotency_key) == ("r1", "nightly-2026-11-26")
    assert full.spec.dataset == "credit" and full.window.max_rows == 100


PASSED = GateResult(name="min_metric", passed=True, value=0.9, threshold=0.8)
FAILED = GateResult(name="challenger", passed=False, value=-0.03, threshold=-0.01)


@pytest.mark.parametrize(
    "result, status, code",
    [
        (TrainResult(status=TrainStatus.TRAIN_STATUS_REGISTERED, version=2), "REGISTERED", ExitCode.OK),
        (
            TrainResult(status=TrainStatus.TRAIN_STATUS_GATES_FAILED, version=3, gates=[FAILED]),
            "GATES_FAILED",
            ExitCode.FAILED,
        ),
        (
            TrainResult(status=TrainStatus.TRAIN_STATUS_FAILED, error="invalid_data: x"),
            "FAILED",
            ExitCode.FAILED,
        ),
        # A duplicate carries the earlier job's result: it means what that meant.
        (
            TrainResult(status=TrainStatus.TRAIN_STATUS_DUPLICATE, version=2, gates=[PASSED]),
            "REGISTERED",
            ExitCode.OK,
        ),
        (
            TrainResult(status=TrainStatus.TRAIN_STATUS_DUPLICATE, version=3, gates=[PASSED, FAILED]),
            "GATES_FAILED",
            ExitCode.FAILED,
        ),
        (
            TrainResult(status=TrainStatus.TRAIN_STATUS_DUPLICATE, error="coalesced"),
            "FAILED",
            ExitCode.FAILED,
        ),
    ],
)
def test_outcomes_and_their_exit_codes(result: TrainResult, status: str, code: ExitCode) -> None:
    meaning = outcome(result)
    assert (meaning.status, meaning.code) == (status, code)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bad/name"], "is not a model name"),
        (["m", "--trigger", "drift"], "--trigger: one of manual, scheduled, initial"),
        (["m", "--spec", "{spec}", "--spec-version", "2"], "exclude each other"),
        (["m", "--last", "1d", "--start", "2026-11-26T00:00:00Z"], "exclude each other"),
        (["m", "--last", "a week"], "--last: expected a positive duration"),
        (["m", "--start", "2026-11-26T00:00:00"], "--start: needs a UTC offset"),
        (["m", "--end", "yesterday"], "--end: not an ISO-8601 time"),
        (["m", "--max-rows", "-1"], "greater than or equal to 0"),
        (["m", "--min-rows", str(2**64)], "less than or equal to"),
        (["m", "--last", "99999999999w"], "--last: '99999999999w' is longer than any calendar goes back"),
        (["m", "--last", "999999d"], "--last:"),
        (["m", "--request-id", "a\nb"], "--request-id: up to 256 printable characters"),
        (["m", "--idempotency-key", "k" * 300], "--idempotency-key: up to 256 printable characters"),
        (["m", "--timeout", "inf"], "--timeout"),
        (["m", "--spec", "{missing}"], "missing.json"),
        (["other-model", "--spec", "{spec}"], "the spec is for model 'm', not 'other-model'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_sent(
    tmp_path: Path, args: list[str], message: str
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"model_name": "m", "dataset": "credit"}')
    # Nothing listens here: a refusal that got as far as Kafka would exit 3, not 2.
    unreachable = f"127.0.0.1:{free_port()}"
    filled = [a.format(spec=spec, missing=tmp_path / "missing.json") for a in args]
    result = runner.invoke(app, ["models", "train", *filled, "--bootstrap-servers", unreachable])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in " ".join(result.output.split())  # as one line, whatever the terminal's width


def test_a_spec_version_needs_a_token_to_read_it_from_the_registry() -> None:
    result = runner.invoke(app, ["models", "train", "m", "--spec-version", "2"])
    assert result.exit_code == ExitCode.DENIED
    assert "no token" in result.output


@pytest.mark.parametrize("follow", ["--follow", "--no-follow"])
def test_an_unreachable_broker_is_unavailable(follow: str) -> None:
    result = runner.invoke(
        app, ["models", "train", "m", follow, "--bootstrap-servers", f"127.0.0.1:{free_port()}"]
    )
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert "Kafka at 127.0.0.1" in result.output


def test_the_progress_bar_follows_the_trainers_results() -> None:
    view = TrainProgress("churn", enabled=False)
    (task,) = view.progress.tasks
    assert task.description == "churn: waiting for a trainer" and task.completed == 0
    view(TrainResult(status=TrainStatus.TRAIN_STATUS_STARTED))
    assert task.description == "churn: training" and view.last_status == "the job started and did not finish"
    view(TrainResult(status=TrainStatus.TRAIN_STATUS_PROGRESS, progress=0.4))
    assert task.completed == 0.4
    view(TrainResult(status=TrainStatus.TRAIN_STATUS_PROGRESS, progress=7.0))  # never past the end
    assert task.completed == 1.0
    view(TrainResult(status=TrainStatus.TRAIN_STATUS_GATES_FAILED))
    assert task.completed == 1.0
