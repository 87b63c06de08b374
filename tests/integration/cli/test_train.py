"""``mlops models train`` and the gate reports of ``mlops models show`` against a real
trainer, ingest and registry (in process, on the session's broker and database): a request
followed to a promoted version, a worse challenger refused with the gate and the margin it
missed by, a repeated idempotency key coalesced, a failed job, a request only submitted,
and a request nobody answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from services.cli.output import ExitCode
from services.common.auth import Scope
from services.common.proto.mlops.v1.events_pb2 import TrainStatus
from services.common.proto.mlops.v1.model_pb2 import Gates
from tests.helpers.cli import Cli, json_document
from tests.integration.trainer.conftest import Platform, names, platform  # noqa: F401  (fixtures)
from tests.unit.trainer import synthetic


def spec_document(dataset: str, model: str, **kwargs: Any) -> dict[str, Any]:
    """A fast spec (one logistic regression, no search) as a person writes it in a file."""
    spec = synthetic.spec(model, dataset=dataset, **kwargs)
    document: dict[str, Any] = json_format.MessageToDict(spec, preserving_proto_field_name=True)
    return document


def one_line(text: str) -> str:
    """Output as one line, whatever width the console wrapped it at."""
    return " ".join(text.split())


@pytest.fixture
def cli(platform: Platform, tmp_path: Path) -> Cli:  # noqa: F811
    """``mlops models ...`` against the platform: its registry, broker and topic prefix."""
    runner = Cli(
        f"127.0.0.1:{platform.registry_app.grpc_port}",
        platform.infra.token(Scope.READ, subject="operator"),
        tmp_path / "no-stack",
    )
    runner.env["MLOPS_KAFKA_BOOTSTRAP_SERVERS"] = platform.infra.kafka_bootstrap
    runner.env["MLOPS_TOPIC_PREFIX"] = platform.topics.prefix
    return runner


@pytest.fixture
async def stored(platform: Platform, names: tuple[str, str]) -> tuple[str, str]:  # noqa: F811
    """This test's dataset, with 400 labelled events stored through ingest, and its model's name."""
    dataset, _ = names
    await platform.dataset(dataset, 400)
    return names


async def test_a_request_followed_to_a_promoted_version_whose_gates_show_reports(
    platform: Platform,  # noqa: F811
    stored: tuple[str, str],
    cli: Cli,
    tmp_path: Path,
) -> None:
    dataset, model = stored
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(spec_document(dataset, model, gates=Gates(min_metric=0.6, max_slice_gap=0.5)))
    )

    result = await cli.json("train", model, "--spec", str(spec_file), "--max-rows", "300")
    assert result["status"] == "TRAIN_STATUS_REGISTERED" and result["version"] == 1, result
    floor, gap = result["gates"]
    assert (floor["name"], floor["passed"], gap["name"], gap["passed"]) == (
        "min_metric",
        True,
        "slice_gap:color",
        True,
    )
    assert floor["margin"] == pytest.approx(floor["value"] - 0.6) and floor["margin"] > 0
    assert gap["margin"] == pytest.approx(0.5 - gap["value"])
    statuses = [r.status for r in platform.results.of(result["request_id"])]
    assert statuses[0] == TrainStatus.TRAIN_STATUS_STARTED
    assert TrainStatus.TRAIN_STATUS_PROGRESS in statuses  # what the progress bar is fed

    version = await platform.registry.get_version(model, alias="production")
    assert version.version == 1 and version.lineage.train_request_id == result["request_id"]
    assert version.lineage.trigger == "manual"
    assert version.lineage.data.row_count == 300  # --max-rows replaced the spec's window

    code, out, err = await cli("show", model)
    assert code == ExitCode.OK, err
    shown = one_line(out)
    assert f"gates of {model} v1: passed" in shown
    assert "min_metric" in shown and "slice_gap:color" in shown and f"+{floor['margin']:.4f}" in shown
    document = await cli.json("show", model)
    assert document["versions"][0]["gates"] == result["gates"]


async def test_a_worse_challenger_exits_1_naming_the_gate_and_its_margin_and_a_repeat_coalesces(
    platform: Platform,  # noqa: F811
    stored: tuple[str, str],
    cli: Cli,
    tmp_path: Path,
) -> None:
    dataset, model = stored
    # The first version from a stored spec, read from the registry by --spec-version.
    await platform.registry.create_model(model)
    spec = await platform.registry.put_spec(synthetic.spec(model, dataset=dataset))
    first = await cli.json("train", model, "--spec-version", str(spec.spec_version))
    assert first["status"] == "TRAIN_STATUS_REGISTERED", first

    # Without the two features that carry the signal, the challenger must lose.
    worse = tmp_path / "worse.json"
    worse.write_text(
        json.dumps(spec_document(dataset, model, features=("flag", "f1"), gates=Gates(max_regression=0.01)))
    )
    key = f"{model}-worse"
    code, out, err = await cli("train", model, "--spec", str(worse), "--idempotency-key", key)
    assert code == ExitCode.FAILED, err
    said = one_line(out)
    assert f"GATES_FAILED {model} v2" in said and "not promoted: challenger by 0." in said
    assert f"mlops models show {model} --version 2" in said

    code, out, err = await cli("show", model, "--version", "2")
    assert code == ExitCode.OK, err
    assert f"gates of {model} v2: FAILED (challenger by 0." in one_line(out)
    document = await cli.json("show", model)
    (challenger,) = document["versions"][0]["gates"]
    assert challenger["name"] == "challenger" and challenger["passed"] is False
    assert challenger["margin"] < 0
    assert challenger["margin"] == pytest.approx(challenger["value"] - challenger["threshold"])
    assert document["model"]["aliases"] == {"production": 1}

    code, out, err = await cli("train", model, "--spec", str(worse), "--idempotency-key", key, "--json")
    assert code == ExitCode.FAILED, err  # the job it joined failed its gates
    repeat = json_document(out)
    assert repeat["status"] == "TRAIN_STATUS_DUPLICATE" and repeat["version"] == 2
    assert len(await platform.registry.list_versions(model)) == 2  # nothing trained twice

    code, _, err = await cli("show", model, "--version", "3")
    assert code == ExitCode.NOT_FOUND and "no version 3" in err


async def test_a_failed_job_a_request_only_submitted_and_one_nobody_answers(
    platform: Platform,  # noqa: F811
    names: tuple[str, str],  # noqa: F811
    cli: Cli,
    tmp_path: Path,
) -> None:
    dataset, model = names  # the dataset is never registered
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_document(dataset, model)))

    code, out, err = await cli("train", model, "--spec", str(spec))
    assert code == ExitCode.FAILED, err
    assert f"FAILED {model}" in one_line(out) and "invalid_spec: dataset" in one_line(out)

    code, out, err = await cli("train", model, "--spec", str(spec), "--no-follow", "--json")
    assert code == ExitCode.OK, err
    request = json_document(out)
    assert request["model_name"] == model and request["spec"]["dataset"] == dataset
    answered = await platform.results.final(request["request_id"])
    assert answered.status == TrainStatus.TRAIN_STATUS_FAILED  # it was a real request

    nobody = Cli(cli.env["MLOPS_REGISTRY_ADDRESS"], cli.env["MLOPS_TOKEN"], tmp_path / "no-stack")
    nobody.env.update(cli.env, MLOPS_TOPIC_PREFIX=f"{platform.topics.prefix}-idle")
    code, _, err = await nobody("train", model, "--spec", str(spec), "--timeout", "2")
    assert code == ExitCode.UNAVAILABLE
    assert "no outcome for train request" in one_line(err) and "no answer from any trainer" in one_line(err)
