"""``mlops models train``: ask the trainer for a new version of a model, and follow the job.

The command builds a ``TrainRequest`` (a spec from a file, a stored spec version, or none:
then the trainer takes the model's newest stored spec or its production version's),
publishes it on ``<prefix>.train.requests`` in the CloudEvents envelope keyed by the model
name, and follows ``<prefix>.train.results`` for its request id until the job ends. It
reads the results topic from its current end, fixed before the request is published, so
no answer can slip past; the trainer's PROGRESS results drive a progress bar.

Outcomes and exit codes (those of ``mlops``):

- REGISTERED: a version passed its gates (and, on an AUTO-policy model, is production): 0;
- GATES_FAILED: a version was registered for the record but not promoted; the command
  says which gate failed and by how much: 1;
- FAILED: the trainer's reason (``invalid_spec: ...``, ``invalid_data: ...``): 1;
- DUPLICATE: the idempotency key belongs to an earlier job; its outcome decides;
- no outcome within ``--timeout`` (no trainer running, or the job still going), or no
  broker: 3. Bad options or spec files: 2.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Generic, TypeVar

import typer
from aiokafka.errors import KafkaError
from google.protobuf.message import Message
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from services.cli.context import RegistryAddressOption, TokenOption, kafka_security, resolve_kafka
from services.cli.datasets import MAX_ROWS, MaxRows, WindowEnd, WindowStart, data_window
from services.cli.models import Name, call_registry, gates_failed, gates_table, headline_metrics, message_json
from services.cli.output import ExitCode, JsonOutput, console, err_console, fail, print_json
from services.cli.topics import BootstrapOption
from services.common.clients.registry import MODEL_NAME
from services.common.events import EnvelopeError, Topics, decode, encode
from services.common.kafka import TailReader, create_producer, ensure_topics, publish
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, ModelSpec
from services.common.train_requests import parse_duration, parse_spec, train_request

TRIGGERS = {
    "manual": TrainTrigger.TRAIN_TRIGGER_MANUAL,
    "scheduled": TrainTrigger.TRAIN_TRIGGER_SCHEDULED,
    "initial": TrainTrigger.TRAIN_TRIGGER_INITIAL,
}
FINAL = {
    TrainStatus.TRAIN_STATUS_REGISTERED,
    TrainStatus.TRAIN_STATUS_GATES_FAILED,
    TrainStatus.TRAIN_STATUS_FAILED,
    TrainStatus.TRAIN_STATUS_DUPLICATE,
}
M = TypeVar("M", bound=Message)
MAX_ID_LENGTH = 256
_ID = re.compile(rf"[^\x00-\x1f\x7f]{{0,{MAX_ID_LENGTH}}}")


# ------------------------------------------------------------------ the request


def read_spec_file(path: Path) -> ModelSpec:
    """A ``ModelSpec`` from JSON, or YAML when the file ends in ``.yaml``/``.yml`` (see
    :func:`~services.common.train_requests.parse_spec`).

    Raises ``ValueError`` naming the file and what is wrong with it.
    """
    try:
        return parse_spec(path.read_text(), yaml_format=path.suffix.lower() in (".yaml", ".yml"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _requested_by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli"


# ------------------------------------------------------------------ the outcome


@dataclass(frozen=True)
class Outcome:
    """What a final result means: a word for people, the exit code for scripts."""

    status: str
    code: ExitCode


def outcome(result: TrainResult) -> Outcome:
    """REGISTERED 0, GATES_FAILED and FAILED 1; a DUPLICATE carries the earlier job's result,
    so it means what that job's outcome meant."""
    status = result.status
    if status == TrainStatus.TRAIN_STATUS_DUPLICATE:
        if not result.version:
            status = TrainStatus.TRAIN_STATUS_FAILED
        elif all(gate.passed for gate in result.gates):
            status = TrainStatus.TRAIN_STATUS_REGISTERED
        else:
            status = TrainStatus.TRAIN_STATUS_GATES_FAILED
    name = TrainStatus.Name(status).removeprefix("TRAIN_STATUS_")
    return Outcome(name, ExitCode.OK if status == TrainStatus.TRAIN_STATUS_REGISTERED else ExitCode.FAILED)


def _show_outcome(result: TrainResult, meaning: Outcome) -> None:
    # Errors and names quote what others sent: print them as text, never as console markup.
    name = result.model_name
    took = f" in {result.duration_seconds:.1f}s" if result.duration_seconds else ""
    duplicate = result.status == TrainStatus.TRAIN_STATUS_DUPLICATE
    if duplicate:
        console.print(Text.assemble(("DUPLICATE", "bold"), f": {result.error}"))
    if meaning.status == "REGISTERED":
        console.print(
            Text.assemble(("REGISTERED", "bold green"), f" {name} v{result.version}{took}: gates passed")
        )
    elif meaning.status == "GATES_FAILED":
        console.print(
            Text.assemble(
                ("GATES_FAILED", "bold red"),
                f" {name} v{result.version}{took} is kept for the record but not promoted: "
                f"{gates_failed(result.gates)}",
            )
        )
    else:
        failure = "the earlier job's outcome" if duplicate else result.error
        console.print(Text.assemble(("FAILED", "bold red"), f" {name}{took}: {failure}"))
        return
    if result.metrics:
        console.print(f"holdout: {headline_metrics(result.metrics)}", highlight=False)
    if result.gates:
        console.print(gates_table(result.gates))
    console.print(f"details: mlops models show {name} --version {result.version}", highlight=False)


# ------------------------------------------------------------------ Kafka


class ResultFollower(Generic[M]):
    """The results topic from its current end, fixed at :meth:`start`: every result
    published after that, filtered to one request id (train and batch scoring results)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        message_type: type[M],
        *,
        request_id: Callable[[M], str],
        final: Callable[[M], bool],
    ):
        self._bootstrap = bootstrap
        self._topic = topic
        self._type = message_type
        self._request_id = request_id
        self._final = final
        # Assigned partitions, no group: a group join costs seconds on the embedded broker.
        self._security = kafka_security()
        self._reader = TailReader(bootstrap, [topic], client_id="mlops-cli-train", security=self._security)

    async def start(self) -> None:
        """Fix "the end" now, before the request goes out."""
        await ensure_topics(self._bootstrap, [self._topic], security=self._security)
        try:
            await self._reader.start()
        except LookupError:
            raise KafkaError(f"the broker lists no partitions of {self._topic}") from None

    async def stop(self) -> None:
        await self._reader.stop()

    async def follow(self, request_id: str, on_result: Callable[[M], None]) -> M:
        """Results for ``request_id`` to ``on_result`` until a final one, which it returns."""
        while True:
            for record in await self._reader.read(timeout_ms=1000):
                try:
                    result = decode(record, self._type).message
                except EnvelopeError:
                    continue  # not ours to judge
                if self._request_id(result) != request_id:
                    continue
                on_result(result)
                if self._final(result):
                    return result


async def submit(bootstrap: str, topics: Topics, request: TrainRequest) -> None:
    """Publish ``request`` keyed by its model name, once the broker acknowledged it."""
    producer = create_producer(bootstrap, "mlops-cli-train", linger_ms=0, security=kafka_security())
    try:
        await producer.start()
        await publish(
            producer, [encode(topics.train_requests, request, source="/cli", key=request.model_name)]
        )
    finally:
        await producer.stop()


class TrainProgress:
    """The job's state as a progress bar on stderr, fed by the trainer's results."""

    def __init__(self, model_name: str, enabled: bool):
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not enabled,
            transient=True,
        )
        self._model_name = model_name
        self._task = self.progress.add_task(f"{model_name}: waiting for a trainer", total=1.0)
        self.last_status = "no answer from any trainer"

    def __call__(self, result: TrainResult) -> None:
        if result.status == TrainStatus.TRAIN_STATUS_STARTED:
            self.last_status = "the job started and did not finish"
            self.progress.update(self._task, description=f"{self._model_name}: training", completed=0.0)
        elif result.status == TrainStatus.TRAIN_STATUS_PROGRESS:
            self.progress.update(self._task, completed=min(max(result.progress, 0.0), 1.0))
        elif result.status in FINAL:
            self.progress.update(self._task, completed=1.0)


# ------------------------------------------------------------------ the command


def train(
    name: Name,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="A ModelSpec as JSON or YAML. Default: the model's newest stored spec or its "
            "production version's (the trainer picks the newer).",
            dir_okay=False,
        ),
    ] = None,
    spec_version: Annotated[
        int, typer.Option(min=0, help="Train with this stored spec version (see `mlops models spec list`).")
    ] = 0,
    last: Annotated[
        str | None, typer.Option(help="Window: events of the last 30m, 12h, 7d ... (instead of --start).")
    ] = None,
    start: WindowStart = None,
    end: WindowEnd = None,
    max_rows: MaxRows = 0,
    min_rows: Annotated[
        int, typer.Option(min=0, max=MAX_ROWS, help="Fail the job if the window has fewer rows.")
    ] = 0,
    idempotency_key: Annotated[
        str, typer.Option(help="Requests with the same key make one job (default: this request's id).")
    ] = "",
    request_id: Annotated[str, typer.Option(help="The request's id (default: a new one).")] = "",
    trigger: Annotated[
        str, typer.Option(help="manual, scheduled or initial (kept in the lineage).")
    ] = "manual",
    follow: Annotated[
        bool, typer.Option(help="Follow the job to its outcome; --no-follow only submits the request.")
    ] = True,
    timeout: Annotated[
        float,
        typer.Option(
            min=1, max=7 * 86400, help="Seconds to wait for the outcome (exit 3 when it does not come)."
        ),
    ] = 900.0,
    bootstrap_servers: BootstrapOption = None,
    address: RegistryAddressOption = None,
    token: TokenOption = None,
    json_output: JsonOutput = False,
) -> None:
    """Train a new version of a model: submit a train request and follow it to its outcome.

    Any window option (--last/--start/--end/--max-rows/--min-rows) replaces the spec's
    window whole. The outcome shows the version, its holdout metrics and every gate with
    its margin; exit 0 when a version passed its gates, 1 when the gates or the job failed.
    [bold]--json[/] prints the final TrainResult. --spec-version reads the registry
    ([bold]read[/] scope); the request itself goes to Kafka.

      mlops models train churn --spec churn.yaml --last 30d
    """
    if not MODEL_NAME.fullmatch(name):
        fail(
            f"NAME: {name!r} is not a model name (letters, digits, '.', '_', '-'; up to 128)", ExitCode.USAGE
        )
    for option, value in (("--request-id", request_id), ("--idempotency-key", idempotency_key)):
        if not _ID.fullmatch(value):
            fail(f"{option}: up to {MAX_ID_LENGTH} printable characters, got {value[:64]!r}", ExitCode.USAGE)
    if trigger not in TRIGGERS:
        fail(f"--trigger: one of {', '.join(TRIGGERS)}", ExitCode.USAGE)
    if spec_file is not None and spec_version:
        fail("--spec and --spec-version exclude each other", ExitCode.USAGE)
    if last is not None and start is not None:
        fail("--last and --start exclude each other", ExitCode.USAGE)
    spec = _spec(name, spec_file, spec_version, address, token)
    window = _window(last, start, end, max_rows, min_rows)
    request = train_request(
        name,
        spec=spec,
        window=window,
        request_id=request_id,
        idempotency_key=idempotency_key,
        trigger=TRIGGERS[trigger],
        requested_by=_requested_by(),
    )
    bootstrap, prefix = resolve_kafka(bootstrap_servers)
    topics = Topics(prefix)
    view = TrainProgress(name, enabled=follow and not json_output)

    async def run() -> TrainResult | None:
        follower = ResultFollower(
            bootstrap,
            topics.train_results,
            TrainResult,
            request_id=lambda r: r.request_id,
            final=lambda r: r.status in FINAL,
        )
        try:
            if follow:
                await follower.start()
            await submit(bootstrap, topics, request)
            err_console.print(f"submitted train request {request.request_id} for {name}", highlight=False)
            if not follow:
                return None
            try:
                with view.progress:
                    async with asyncio.timeout(timeout):
                        return await follower.follow(request.request_id, view)
            except TimeoutError:
                return None
        finally:
            await follower.stop()

    try:
        result = asyncio.run(run())
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {bootstrap}: {exc!r}", ExitCode.UNAVAILABLE)
    if not follow:
        if json_output:
            print_json(message_json(request))
        return
    if result is None:
        fail(
            f"no outcome for train request {request.request_id} within {timeout:.0f}s ({view.last_status}); "
            f"it stays queued: watch with `mlops topics tail train.results`",
            ExitCode.UNAVAILABLE,
        )
    meaning = outcome(result)
    if json_output:
        print_json(message_json(result))
    else:
        _show_outcome(result, meaning)
    raise typer.Exit(int(meaning.code))


def _spec(
    name: str, spec_file: Path | None, spec_version: int, address: str | None, token: str | None
) -> ModelSpec | None:
    if spec_file is not None:
        try:
            spec = read_spec_file(spec_file)
        except ValueError as exc:
            fail(f"--spec {exc}", ExitCode.USAGE)
        if spec.model_name and spec.model_name != name:
            fail(
                f"--spec {spec_file}: the spec is for model {spec.model_name!r}, not {name!r}", ExitCode.USAGE
            )
        spec.model_name = name
        return spec
    if spec_version:
        return call_registry(
            address, token, f"spec {spec_version} of {name}", lambda c: c.get_spec(name, spec_version)
        )
    return None


def _window(
    last: str | None, start: str | None, end: str | None, max_rows: int, min_rows: int
) -> DataWindow | None:
    if last is None and start is None and end is None and not max_rows and not min_rows:
        return None
    # An empty dataset means the spec's: the window only bounds which of its rows are read.
    window = data_window("", start, end, max_rows, min_rows)
    if last is not None:
        try:
            since = datetime.now(UTC) - parse_duration(last)
        except (ValueError, OverflowError) as exc:
            fail(f"--last: {exc}", ExitCode.USAGE)
        window.start_time.FromDatetime(since)
    return window
