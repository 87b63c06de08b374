"""The operator commands' own logic, without a platform: tokens, reading rows from files,
and building and reading Open Inference Protocol messages."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.__main__ import app
from services.cli.output import ExitCode, exit_code_for
from services.cli.predict import matrix_request, named_request, parse_features, read_predictions
from services.cli.rows import BadRow, Row, detect_format, parse_cell, read_rows
from services.common.auth import KeySet, PlatformKeys, Scope, TokenVerifier
from services.common.errors import Kind
from services.common.proto.inference import grpc_service_pb2 as oip
from tests.helpers.keys import KEYS

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands must not pick up a stack someone runs in the checkout."""
    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("MLOPS_AUTH_PUBLIC_KEYS", raising=False)
    monkeypatch.delenv("MLOPS_TOKEN", raising=False)


def test_token_inspect_shows_what_a_token_grants_and_refuses_other_keys() -> None:
    env = {"MLOPS_AUTH_PUBLIC_KEYS": KEYS.public_keys}
    token = KEYS.mint("app:checkout", Scope.PREDICT, Scope.READ, teams=["fraud"], ttl_seconds=60)
    inspected = runner.invoke(app, ["token", "inspect", token, "--json"], env=env)
    assert inspected.exit_code == 0, inspected.output
    shown = json.loads(inspected.stdout)
    assert (shown["subject"], shown["scopes"], shown["teams"]) == (
        "app:checkout",
        ["predict", "read"],
        ["fraud"],
    )
    assert shown["expires_at"] is not None and shown["id"]

    foreign = PlatformKeys().mint("mallory", Scope.ADMIN)
    refused = runner.invoke(app, ["token", "inspect", foreign], env=env)
    assert refused.exit_code == ExitCode.DENIED
    assert "unknown key" in refused.output
    no_keys = runner.invoke(app, ["token", "inspect", token])
    assert no_keys.exit_code == ExitCode.USAGE and "MLOPS_AUTH_PUBLIC_KEYS" in no_keys.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["-s", "predcit"], "unknown scope 'predcit'"),
        (["-s", "read", "--ttl", "0"], "--ttl"),
    ],
)
def test_token_create_refuses_bad_input_before_asking_the_registry(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["token", "create", *args, "--address", "127.0.0.1:1", "--token", "x"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output
    assert result.stdout.strip() == ""  # nothing a script could mistake for a token


def test_keygen_and_jwks_make_keys_the_verifier_trusts(tmp_path: Path) -> None:
    issuer_pem, service_pem = tmp_path / "issuer.pem", tmp_path / "service.pem"
    made = runner.invoke(app, ["token", "keygen", "--private-key", str(issuer_pem)])
    assert made.exit_code == 0, made.output
    jwk = json.loads(made.stdout)
    assert "d" not in jwk and jwk["alg"] == "EdDSA"
    assert issuer_pem.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["token", "keygen", "--private-key", str(issuer_pem)])
    assert again.exit_code == ExitCode.USAGE, "an existing key file is never overwritten"
    service = runner.invoke(
        app, ["token", "keygen", "--service", "--algorithm", "ES256", "--private-key", str(service_pem)]
    )
    assert json.loads(service.stdout)["kid"].startswith("service-")

    listed = runner.invoke(
        app, ["token", "jwks", "--key", str(issuer_pem), "--service-key", str(service_pem)]
    )
    keys = KeySet.from_json(listed.stdout)
    assert keys.kids() == sorted([jwk["kid"], json.loads(service.stdout)["kid"]])
    signed = runner.invoke(
        app,
        ["token", "sign", "--private-key", str(issuer_pem), "--subject", "ops", "-s", "admin", "--ttl", "60"],
    )
    assert signed.exit_code == 0, signed.output
    principal = asyncio.run(TokenVerifier(keys).verify(f"Bearer {signed.stdout.strip()}"))
    assert (principal.subject, principal.admin) == ("ops", True)
    assert principal.expires_at is not None and principal.expires_at <= time.time() + 61


def test_error_kinds_map_to_documented_exit_codes() -> None:
    assert exit_code_for(Kind.UNAVAILABLE) == ExitCode.UNAVAILABLE
    assert exit_code_for(Kind.PERMISSION) == ExitCode.DENIED
    assert exit_code_for(Kind.UNAUTHENTICATED) == ExitCode.DENIED
    assert exit_code_for(Kind.NOT_FOUND) == ExitCode.NOT_FOUND
    assert exit_code_for(Kind.INVALID) == ExitCode.USAGE
    assert exit_code_for(Kind.INTERNAL) == ExitCode.FAILED


def test_csv_cells_become_numbers_only_when_finite() -> None:
    assert parse_cell("3") == 3
    assert parse_cell(" -0.5 ") == -0.5
    assert parse_cell("1e3") == 1000.0
    assert parse_cell("nan") == "nan"
    assert parse_cell("inf") == "inf"
    assert parse_cell("red") == "red"


def test_rows_report_bad_lines_by_number(tmp_path: Path) -> None:
    csv_file = tmp_path / "events.csv"
    csv_file.write_text("event_id,f0,color\ne1,0.5,red\ne2,1\n\ne3,,blue\n")
    rows = list(read_rows(str(csv_file), "csv"))
    assert rows == [
        Row(2, {"event_id": "e1", "f0": 0.5, "color": "red"}),
        BadRow(3, "2 cells for 3 columns"),
        Row(5, {"event_id": "e3", "color": "blue"}),
    ]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"event_id": "e1", "f0": 1}\n[1, 2]\n{"f0": NaN}\n{broken\n')
    rows = list(read_rows(str(jsonl), "jsonl"))
    assert rows[0] == Row(1, {"event_id": "e1", "f0": 1})
    assert [(r.line, type(r).__name__) for r in rows[1:]] == [(2, "BadRow"), (3, "BadRow"), (4, "BadRow")]
    assert "expected a JSON object" in rows[1].reason  # type: ignore[union-attr]
    assert "NaN" in rows[2].reason  # type: ignore[union-attr]


def test_format_comes_from_the_name_or_is_asked_for() -> None:
    assert detect_format("a.CSV", None) == "csv"
    assert detect_format("a.ndjson", None) == "jsonl"
    assert detect_format("-", "jsonl") == "jsonl"
    with pytest.raises(ValueError, match="--format"):
        detect_format("events.txt", None)
    with pytest.raises(ValueError, match="unknown format"):
        detect_format("events.txt", "parquet")


def test_features_must_be_finite_numbers() -> None:
    assert parse_features("1, 2.5,-3") == [1.0, 2.5, -3.0]
    with pytest.raises(ValueError, match="item 1"):
        parse_features("1,x")
    with pytest.raises(ValueError, match="not a finite number"):
        parse_features("1,nan")


def test_matrix_request_is_the_signatures_features_tensor() -> None:
    request = matrix_request("churn", [[1.0, 2.0], [3.0, 4.0]], alias="candidate", request_id="r1")
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("features", "FP64", [2, 2])
    assert list(tensor.contents.fp64_contents) == [1.0, 2.0, 3.0, 4.0]
    assert request.parameters["alias"].string_param == "candidate"
    assert request.id == "r1"
    with pytest.raises(ValueError, match="same number"):
        matrix_request("churn", [[1.0], [1.0, 2.0]])


def test_named_request_has_one_typed_tensor_per_feature() -> None:
    request = named_request(
        "churn", [{"tenure": 3, "plan": "pro", "vip": True}, {"tenure": 1.5, "plan": "free", "vip": False}]
    )
    tensors = {t.name: t for t in request.inputs}
    assert tensors["tenure"].datatype == "FP64" and list(tensors["tenure"].contents.fp64_contents) == [
        3.0,
        1.5,
    ]
    assert tensors["plan"].datatype == "BYTES" and list(tensors["plan"].contents.bytes_contents) == [
        b"pro",
        b"free",
    ]
    assert tensors["vip"].datatype == "BOOL" and list(tensors["vip"].shape) == [2]
    with pytest.raises(ValueError, match="'plan' mixes types"):
        named_request("churn", [{"plan": "pro"}, {"plan": 2}])
    with pytest.raises(ValueError, match="'plan' is missing"):
        named_request("churn", [{"plan": "pro", "x": 1}, {"x": 2}])


def test_predictions_are_read_from_typed_and_raw_outputs() -> None:
    typed = oip.ModelInferResponse(model_name="churn", model_version="3")
    probabilities = typed.outputs.add(name="probabilities", datatype="FP64", shape=[2, 2])
    probabilities.contents.fp64_contents.extend([0.9, 0.1, 0.2, 0.8])
    label = typed.outputs.add(name="label", datatype="BYTES", shape=[2])
    label.contents.bytes_contents.extend([b"no", b"yes"])
    first, second = read_predictions(typed, ["a", "b"])
    assert (first.label, first.probabilities, first.model_version) == ("no", [0.9, 0.1], "3")
    assert (second.label, second.probabilities) == ("yes", [0.2, 0.8])

    raw = oip.ModelInferResponse(model_name="price", model_version="1")
    raw.outputs.add(name="value", datatype="FP64", shape=[2])
    raw.raw_output_contents.append(struct.pack("<2d", 10.5, -1.0))
    assert [p.value for p in read_predictions(raw, ["a", "b"])] == [10.5, -1.0]
    raw_labels = oip.ModelInferResponse(model_version="1")
    raw_labels.outputs.add(name="label", datatype="BYTES", shape=[2])
    raw_labels.raw_output_contents.append(struct.pack("<I", 2) + b"no" + struct.pack("<I", 3) + b"yes")
    assert [p.label for p in read_predictions(raw_labels, ["a", "b"])] == ["no", "yes"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["churn"], "exactly one of"),
        (["churn", "--features", "1", "--row", "{}"], "exactly one of"),
        (["churn", "--features", "1", "--version", "2", "--alias", "candidate"], "two ways"),
        (["churn", "--features", "1,abc", "--token", "t"], "item 1"),
        (["churn", "--row", "[1]", "--token", "t"], "JSON object"),
        (["churn", "--file", "rows.txt", "--token", "t"], "--format"),
    ],
)
def test_predict_refuses_bad_arguments_before_calling_anything(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["predict", *args, "--address", "127.0.0.1:1"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output


def test_predict_without_a_token_says_how_to_get_one() -> None:
    result = runner.invoke(app, ["predict", "churn", "--features", "1", "--address", "127.0.0.1:1"])
    assert result.exit_code == ExitCode.DENIED
    assert "mlops token create" in result.output


def test_predict_against_nothing_listening_is_unavailable() -> None:
    from services.common.localstack import free_port

    result = runner.invoke(
        app,
        [
            "predict",
            "churn",
            "--features",
            "1",
            "--address",
            f"127.0.0.1:{free_port()}",
            "--token",
            "t",
            "--timeout",
            "2",
        ],
    )
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
