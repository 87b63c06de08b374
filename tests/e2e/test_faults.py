"""The closed loop survives its infrastructure restarting: on a running stack (every service
its own process), the broker is killed with SIGKILL and restarted as the stack's supervisor
restarts it (its records are lost: the embedded broker keeps them in memory; the supervisor
restarts the monitor with it), then the database; after each, train -> promote -> serve the
new version -> drift -> retrain passes again without any service being restarted by hand.

Serving's periodic re-read of the registry is set far beyond the test, so a new version can
only reach it through the model events it hears: the path the broker restart broke. Each loop
runs on a model of its own, as a second model of a team would: the monitor's retrain cooldown
is per model, and a second drift of the same model within it rightly does not retrain."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from services.cli.demo.command import endpoints_of
from services.cli.demo.report import DemoReport
from services.cli.demo.scenario import ClosedLoopDemo, DemoConfig
from services.cli.stack import ALL_SERVICES, RECORDS_LOST, RESTARTED_WITH_BROKER, LocalStack
from services.cli.stack_state import StackPorts
from services.common.auth import bearer_metadata
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

ENV = {"SERVING_RESYNC_INTERVAL_SECONDS": "3600"}


class ServedWatch:
    """Notes when serving first answers ModelReady for ``version``, polling from a thread."""

    def __init__(self, stack: LocalStack, model: str, version: int = 1):
        self._address = stack.grpc_address("serving")
        self._metadata = bearer_metadata(stack.admin_token)
        self._model = model
        self._version = version
        self._stop = threading.Event()
        self.served_at: float | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        request = oip.ModelReadyRequest(name=self._model, version=str(self._version))
        with grpc.insecure_channel(self._address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set():
                try:
                    if stub.ModelReady(request, metadata=self._metadata, timeout=1).ready:
                        self.served_at = time.monotonic()
                        return
                except grpc.RpcError:
                    pass
                self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def closed_loop(stack: LocalStack, model: str) -> DemoReport:
    """One demo run on ``model``: each loop its own model, so no retrain cooldown of an
    earlier loop stands in the way."""
    report = asyncio.run(
        ClosedLoopDemo(endpoints_of(stack), DemoConfig(), Console(stderr=True), model=model).run()
    )
    assert report.loop_closed, report.verdict
    assert report.retrain_requests == 1
    assert report.first_version == 1 and report.new_version > report.first_version
    assert report.failed_requests == 0
    return report


@pytest.mark.timeout(900)  # three closed loops of about a minute each, more on a busy machine
def test_the_loop_closes_again_after_the_broker_and_then_the_database_restart(
    tmp_path: Path,
) -> None:
    with LocalStack(tmp_path, StackPorts.free(), env=ENV, mongo_sync_on_commit=True) as stack:
        started = time.monotonic()
        watch = ServedWatch(stack, "fresh")
        first = closed_loop(stack, "fresh")
        watch.stop()
        assert watch.served_at is not None
        print(
            f"\nfresh stack -> version 1 served: {watch.served_at - started:.1f}s (the loop: {first.total_seconds:.0f}s)"
        )

        pids = {name: process.pid for name, process in stack.processes.items()}
        stack.kill("kafka")
        watch = ServedWatch(stack, "after-broker")
        restarted = time.monotonic()
        stack.restart("kafka")  # as the supervisor of `mlops up` does
        back = time.monotonic()
        assert stack.notes and RECORDS_LOST in stack.notes[-1]
        # Only the monitor is restarted with the broker (its tables live there); the others
        # resume by themselves.
        kept = [s for s in ALL_SERVICES if s not in RESTARTED_WITH_BROKER]
        assert all(stack.processes[s].pid == pids[s] for s in kept)
        after_broker = closed_loop(stack, "after-broker")
        watch.stop()
        assert watch.served_at is not None
        print(
            f"broker restart -> a new version served: {watch.served_at - restarted:.1f}s "
            f"({back - restarted:.1f}s of it restarting the broker and the monitor; "
            f"the loop: {after_broker.total_seconds:.0f}s)"
        )

        stack.kill("mongodb")
        watch = ServedWatch(stack, "after-database")
        restarted = time.monotonic()
        stack.restart("mongodb")
        after_database = closed_loop(stack, "after-database")
        watch.stop()
        assert watch.served_at is not None
        print(
            f"database restart -> a new version served: {watch.served_at - restarted:.1f}s "
            f"(the loop: {after_database.total_seconds:.0f}s)"
        )
        for service in ALL_SERVICES:
            assert stack.processes[service].alive(), f"{service} died"
        assert all(stack.processes[s].pid == pids[s] for s in kept), "the database restart restarted none"
        print(f"all three loops: {time.monotonic() - started:.0f}s")
