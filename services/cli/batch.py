"""``mlops batch score``: score a stored window of a dataset with one model version, as a job.

The command publishes a ``BatchScoreRequest`` on ``<prefix>.batch.requests`` (keyed by its
job id) and follows ``<prefix>.batch.results`` for that job, read from its end as fixed
before the request goes out, until the job ends. The trainer runs the job and serving
computes the scores (docs/batch.md); they land in the trainer's database collection
``batch_scores`` and on ``<prefix>.batch.scores``.

Exit codes: 0 succeeded; 1 the job failed (its reason is printed); 3 no outcome within
``--timeout`` or no broker (the request stays queued; run the command again with the same
``--job-id`` to follow it: a job id is one job, resumed, never scored twice); 2 bad options.
"""

from __future__ import annotations

import asyncio
import getpass
import uuid
from typing import Annotated

import typer
from aiokafka.errors import KafkaError

from services.cli.context import kafka_security, resolve_kafka
from services.cli.models import Name, message_json
from services.cli.output import ExitCode, JsonOutput, console, err_console, fail, parse_time, print_json
from services.cli.topics import BootstrapOption
from services.cli.train import ResultFollower
from services.common.clients.registry import MODEL_NAME
from services.common.events import Topics, encode
from services.common.kafka import create_producer, publish
from services.common.proto.mlops.v1.batch_pb2 import BatchScoreRequest, BatchScoreResult
from services.common.proto.mlops.v1.model_pb2 import DataWindow

app = typer.Typer(
    help="Batch scoring: a stored window scored by a model version, as a job.", no_args_is_help=True
)

FINAL = {BatchScoreResult.STATE_SUCCEEDED, BatchScoreResult.STATE_FAILED}


def score_request(
    name: str,
    dataset: str,
    *,
    start: str | None = None,
    end: str | None = None,
    version: int = 0,
    alias: str = "",
    job_id: str = "",
    requested_by: str = "",
) -> BatchScoreRequest:
    """The request the options describe (times checked: a usage error otherwise)."""
    window = DataWindow(dataset=dataset)
    for option, value, field in (("--from", start, "start_time"), ("--to", end, "end_time")):
        moment = parse_time(option, value)
        if moment is not None:
            getattr(window, field).FromDatetime(moment)
    return BatchScoreRequest(
        job_id=job_id or uuid.uuid4().hex,
        model_name=name,
        version=version,
        alias=alias,
        window=window,
        requested_by=requested_by,
    )


async def submit(bootstrap: str, topics: Topics, request: BatchScoreRequest) -> None:
    """Publish ``request`` keyed by its job id, once the broker acknowledged it."""
    producer = create_producer(bootstrap, "mlops-cli-batch", linger_ms=0, security=kafka_security())
    try:
        await producer.start()
        await publish(producer, [encode(topics.batch_requests, request, source="/cli", key=request.job_id)])
    finally:
        await producer.stop()


def show(result: BatchScoreResult) -> None:
    """The outcome with its lineage, for people."""
    if result.state == BatchScoreResult.STATE_FAILED:
        console.print(f"[red]failed[/]: {result.error_kind}: {result.error}", highlight=False)
        return
    window = result.window
    bounds = f"{window.window.start_time.ToJsonString() if window.window.HasField('start_time') else '-'}"
    bounds += f" .. {window.window.end_time.ToJsonString()}"
    console.print(
        f"scored {result.rows_scored} rows of {window.window.dataset} ({bounds}) with "
        f"{result.model_name} v{result.version} in {result.seconds:.1f} s\n"
        f"lineage: job {result.job_id}, window sha256 {window.content_sha256}, {window.row_count} rows, "
        f"schema v{window.schema_version}\n"
        f"scores: topic {result.scores_topic}, collection {result.scores_collection} (job_id {result.job_id!r})",
        highlight=False,
    )


@app.command()
def score(
    name: Name,
    dataset: Annotated[str, typer.Option(help="The dataset whose stored rows are scored.")],
    start: Annotated[
        str | None, typer.Option("--from", help="Oldest event time, inclusive (ISO-8601 with offset).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to", help="Newest event time, inclusive (ISO-8601 with offset); default: when the job starts."
        ),
    ] = None,
    version: Annotated[int, typer.Option(min=0, help="The version to score with (it must be served).")] = 0,
    alias: Annotated[
        str, typer.Option(help="Score with the version this alias points at (default production).")
    ] = "",
    job_id: Annotated[
        str, typer.Option(help="The job's id: the same id is the same job, resumed (default: new).")
    ] = "",
    timeout: Annotated[
        float,
        typer.Option(min=1, max=7 * 86400, help="Seconds to wait for the outcome (exit 3 without one)."),
    ] = 3600.0,
    bootstrap_servers: BootstrapOption = None,
    json_output: JsonOutput = False,
) -> None:
    """Score a window of a dataset with a model version and follow the job to its end.

    Prints rows and time, the lineage (version, window bounds, its content hash) and where the
    scores are; [bold]--json[/] prints the final BatchScoreResult.

      mlops batch score churn --dataset customers --from 2026-11-01T00:00:00Z --version 3
    """
    if not MODEL_NAME.fullmatch(name):
        fail(f"NAME: {name!r} is not a model name", ExitCode.USAGE)
    if version and alias:
        fail("--version and --alias exclude each other", ExitCode.USAGE)
    request = score_request(
        name,
        dataset,
        start=start,
        end=end,
        version=version,
        alias=alias,
        job_id=job_id,
        requested_by=getpass.getuser(),
    )
    bootstrap, prefix = resolve_kafka(bootstrap_servers)
    topics = Topics(prefix)

    def progress(result: BatchScoreResult) -> None:
        if result.state == BatchScoreResult.STATE_RUNNING and not json_output:
            err_console.print(f"  {result.rows_scored} rows scored ({result.seconds:.0f} s)", highlight=False)

    async def run() -> BatchScoreResult | None:
        follower = ResultFollower(
            bootstrap,
            topics.batch_results,
            BatchScoreResult,
            request_id=lambda r: r.job_id,
            final=lambda r: r.state in FINAL,
        )
        try:
            await follower.start()
            await submit(bootstrap, topics, request)
            err_console.print(f"submitted batch scoring job {request.job_id}", highlight=False)
            try:
                async with asyncio.timeout(timeout):
                    return await follower.follow(request.job_id, progress)
            except TimeoutError:
                return None
        finally:
            await follower.stop()

    try:
        result = asyncio.run(run())
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {bootstrap}: {exc!r}", ExitCode.UNAVAILABLE)
    if result is None:
        fail(
            f"no outcome for job {request.job_id} within {timeout:.0f}s; it stays queued: "
            f"follow it with `mlops batch score {name} --dataset {dataset} --job-id {request.job_id}`",
            ExitCode.UNAVAILABLE,
        )
    if json_output:
        print_json(message_json(result))
    else:
        show(result)
    raise typer.Exit(0 if result.state == BatchScoreResult.STATE_SUCCEEDED else 1)
