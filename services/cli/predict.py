"""``mlops predict``: ask serving for predictions over the Open Inference Protocol (gRPC)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import grpc
import typer
from rich.table import Table

from services.cli.context import resolve_address, resolve_tls, resolve_token
from services.cli.output import ExitCode, console, err_console, fail, platform_errors, print_json
from services.cli.rows import BadRow, Row, detect_format, read_rows
from services.common.auth import bearer_metadata
from services.common.clients.inference import output_values
from services.common.grpc_errors import platform_error
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.tls import sync_channel

DEFAULT_EXCLUDE = "dataset,event_id,entity_id,ts,timestamp,label"
IN_FLIGHT = 32


@dataclass(frozen=True)
class Prediction:
    id: str
    model_version: str
    label: str | None
    probabilities: list[float] | None
    value: float | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "model_version": self.model_version}
        if self.label is not None:
            out["label"] = self.label
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.value is not None:
            out["value"] = self.value
        return out


def matrix_request(
    model: str, rows: Sequence[Sequence[float]], *, version: str = "", alias: str = "", request_id: str = ""
) -> oip.ModelInferRequest:
    """One FP64 ``features`` tensor of shape [rows, columns], the model signature's own input."""
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("every row needs the same number of features")
    tensor = oip.ModelInferRequest.InferInputTensor(
        name="features", datatype="FP64", shape=[len(rows), width]
    )
    tensor.contents.fp64_contents.extend(v for r in rows for v in r)
    return _request(model, [tensor], version, alias, request_id)


def named_request(
    model: str, rows: Sequence[dict[str, Any]], *, version: str = "", alias: str = "", request_id: str = ""
) -> oip.ModelInferRequest:
    """One 1-D tensor per feature, named by the feature: FP64 for numbers, BYTES for text
    (categoricals), BOOL for booleans. Every row must have the same features."""
    names = list(rows[0])
    tensors = []
    for name in names:
        if any(r.get(name) is None for r in rows):
            raise ValueError(f"feature {name!r} is missing in some rows of the batch")
        column: list[Any] = [r[name] for r in rows]
        tensor = oip.ModelInferRequest.InferInputTensor(name=name, shape=[len(rows)])
        if all(isinstance(v, bool) for v in column):
            tensor.datatype = "BOOL"
            tensor.contents.bool_contents.extend(column)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in column):
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(float(v) for v in column)
        elif all(isinstance(v, str) for v in column):
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in column)
        else:
            raise ValueError(f"feature {name!r} mixes types or holds a list/object")
        tensors.append(tensor)
    return _request(model, tensors, version, alias, request_id)


def _request(
    model: str,
    tensors: list[oip.ModelInferRequest.InferInputTensor],
    version: str,
    alias: str,
    request_id: str,
) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id, inputs=tensors)
    if alias:
        request.parameters["alias"].string_param = alias
    return request


def read_predictions(response: oip.ModelInferResponse, ids: Sequence[str]) -> list[Prediction]:
    """Per-row predictions from the signature's outputs: ``label`` and ``probabilities``
    (classifiers) or ``value`` (regressors)."""
    outputs = {t.name: output_values(response, i) for i, t in enumerate(response.outputs)}
    rows = len(ids)
    labels = outputs.get("label")
    probabilities = outputs.get("probabilities")
    values = outputs.get("value")
    width = len(probabilities) // rows if probabilities else 0
    return [
        Prediction(
            id=ids[i],
            model_version=response.model_version,
            label=str(labels[i]) if labels else None,
            probabilities=[float(p) for p in probabilities[i * width : (i + 1) * width]]
            if probabilities
            else None,
            value=float(values[i]) if values else None,
        )
        for i in range(rows)
    ]


def parse_features(text: str) -> list[float]:
    values = []
    for i, part in enumerate(text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--features: item {i} ({part.strip()!r}) is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"--features: item {i} is {part.strip()}, not a finite number")
        values.append(value)
    return values


def predict(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    features: Annotated[
        str | None, typer.Option(help="One row as comma-separated numbers, in the model's feature order.")
    ] = None,
    row: Annotated[
        str | None,
        typer.Option(help='One row as a JSON object of named features: \'{"f0": 0.3, "color": "red"}\'.'),
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Rows from a .csv or .jsonl file (or - for stdin).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(min=1, help="A version number instead of the default route.")
    ] = None,
    alias: Annotated[str, typer.Option(help="Route by alias (production, candidate, ...).")] = "",
    request_id: Annotated[
        str | None,
        typer.Option("--id", help="Request id; use the event id so the monitor can join the label later."),
    ] = None,
    id_field: Annotated[
        str,
        typer.Option(help="In files: the column that becomes each row's request id (one request per row)."),
    ] = "event_id",
    exclude: Annotated[
        str, typer.Option(help="In files and --row: comma-separated columns that are not features.")
    ] = DEFAULT_EXCLUDE,
    batch_size: Annotated[
        int, typer.Option(min=1, max=4096, help="Rows per request when rows have no id.")
    ] = 64,
    address: Annotated[
        str | None,
        typer.Option(envvar="MLOPS_SERVING_ADDRESS", show_envvar=True, help="Serving's gRPC host:port."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="MLOPS_TOKEN", show_envvar=True, help="Token with the predict scope.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per row (JSON Lines).")
    ] = False,
) -> None:
    """Ask serving for predictions: one row, or every row of a file.

    Talks the Open Inference Protocol over gRPC, as tritonclient does, so what works
    here works from any OIP client. The default route is the [bold]production[/] alias.

      mlops predict churn --features 0.3,1.2,5

      mlops predict churn --row '{"tenure": 3, "plan": "pro"}' --id e-1001

      mlops predict churn --file events.jsonl --json > predictions.jsonl
    """
    if sum(x is not None for x in (features, row, file)) != 1:
        fail("give exactly one of --features, --row, --file", ExitCode.USAGE)
    if version is not None and alias:
        fail("--version and --alias choose the route two ways: give one", ExitCode.USAGE)
    target = resolve_address(address, "serving_grpc")
    metadata = bearer_metadata(resolve_token(token))
    model_version = str(version) if version is not None else ""
    excluded = {c.strip() for c in exclude.split(",") if c.strip()}
    requests: list[tuple[oip.ModelInferRequest, list[str]]] = []
    bad: list[BadRow] = []
    try:
        if features is not None:
            rid = request_id or uuid.uuid4().hex
            requests.append(
                (
                    matrix_request(
                        model, [parse_features(features)], version=model_version, alias=alias, request_id=rid
                    ),
                    [rid],
                )
            )
        elif row is not None:
            values = json.loads(row)
            if not isinstance(values, dict) or not values:
                raise ValueError("--row: expected a non-empty JSON object of named features")
            rid = request_id or str(values.get(id_field) or uuid.uuid4().hex)
            named = {k: v for k, v in values.items() if k not in excluded}
            requests.append(
                (named_request(model, [named], version=model_version, alias=alias, request_id=rid), [rid])
            )
        else:
            assert file is not None
            rows = list(read_rows(file, detect_format(file, None)))
            bad = [r for r in rows if isinstance(r, BadRow)]
            good = [r for r in rows if isinstance(r, Row)]
            requests.extend(_file_requests(model, good, model_version, alias, id_field, excluded, batch_size))
    except (ValueError, OSError) as exc:
        fail(str(exc), ExitCode.USAGE)

    predictions = list(_run(target, requests, metadata, timeout))
    for item in bad:
        err_console.print(f"[yellow]skipped line {item.line}:[/] {item.reason}", highlight=False)
    _show(predictions, json_output)
    if bad:
        raise typer.Exit(int(ExitCode.USAGE))


def _file_requests(
    model: str,
    rows: list[Row],
    version: str,
    alias: str,
    id_field: str,
    excluded: set[str],
    batch_size: int,
) -> Iterator[tuple[oip.ModelInferRequest, list[str]]]:
    """One request per row when rows carry an id (so each prediction joins its label),
    else batches of rows with the same features."""
    batch: list[dict[str, Any]] = []
    batch_ids: list[str] = []
    for item in rows:
        named = {k: v for k, v in item.values.items() if k not in excluded}
        row_id = item.values.get(id_field)
        if row_id is not None:
            yield (
                named_request(model, [named], version=version, alias=alias, request_id=str(row_id)),
                [str(row_id)],
            )
            continue
        if batch and (set(batch[0]) != set(named) or len(batch) >= batch_size):
            yield _batch(model, batch, batch_ids, version, alias)
            batch, batch_ids = [], []
        batch.append(named)
        batch_ids.append(f"line-{item.line}")
    if batch:
        yield _batch(model, batch, batch_ids, version, alias)


def _batch(
    model: str, rows: list[dict[str, Any]], ids: list[str], version: str, alias: str
) -> tuple[oip.ModelInferRequest, list[str]]:
    request_id = uuid.uuid4().hex
    return named_request(model, rows, version=version, alias=alias, request_id=request_id), ids


def _run(
    address: str,
    requests: Iterable[tuple[oip.ModelInferRequest, list[str]]],
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> Iterator[Prediction]:
    """Send with up to :data:`IN_FLIGHT` requests outstanding; answers come back in order."""
    with platform_errors(f"predict via {address}"):
        for response, row_ids in _answers(address, requests, metadata, timeout):
            yield from read_predictions(response, row_ids)


def _answers(
    address: str,
    requests: Iterable[tuple[oip.ModelInferRequest, list[str]]],
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> Iterator[tuple[oip.ModelInferResponse, list[str]]]:
    """Each request's answer and row ids, in order; a refused request raises its platform error."""
    with sync_channel(address, resolve_tls()) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        window: list[tuple[grpc.Future[oip.ModelInferResponse], list[str]]] = []
        try:
            for request, ids in requests:
                window.append((stub.ModelInfer.future(request, metadata=metadata, timeout=timeout), ids))
                if len(window) >= IN_FLIGHT:
                    future, row_ids = window.pop(0)
                    yield future.result(), row_ids
            for future, row_ids in window:
                yield future.result(), row_ids
        except grpc.RpcError as exc:
            raise platform_error(exc) from exc


def _show(predictions: list[Prediction], json_output: bool) -> None:
    if json_output:
        for prediction in predictions:
            print_json(prediction.as_dict())
        return
    table = Table()
    for column in ("id", "version", "label", "probabilities", "value"):
        table.add_column(column)
    for p in predictions[:100]:
        probabilities = " ".join(f"{x:.3f}" for x in p.probabilities) if p.probabilities is not None else ""
        table.add_row(
            p.id, p.model_version, p.label or "", probabilities, "" if p.value is None else f"{p.value:.6g}"
        )
    console.print(table)
    if len(predictions) > 100:
        console.print(f"... {len(predictions) - 100} more rows (use --json for all)")
