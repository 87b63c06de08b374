"""Zero-downtime swaps: promotions and rollbacks under steady load fail no request, and every
answer comes whole from the version it names."""

from __future__ import annotations

import asyncio
import collections

import grpc
import numpy as np

from tests.integration.serving.conftest import Fitted, Stack, features_request, output

CLIENTS = 8
SWAPS = 5


async def test_promote_and_roll_back_repeatedly_under_load_without_a_failed_request(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.register(model_name, model_b)
    await stack.served(model_name, production=2)
    rows = model_a.X[:8]
    expected = {"1": model_a.proba(rows), "2": model_b.proba(rows)}
    answered: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    mismatches: list[str] = []
    stop = asyncio.Event()
    progress = asyncio.Condition()

    async def client() -> None:
        while not stop.is_set():
            try:
                response = await stack.infer(features_request(model_name, rows))
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            answered[response.model_version] += 1
            if not np.allclose(output(response, "probabilities"), expected[response.model_version]):
                mismatches.append(response.model_version)
            async with progress:
                progress.notify_all()

    async def answered_by(version: str) -> None:
        """Wait until requests are being answered by ``version`` (the swap has happened)."""
        target = answered[version] + CLIENTS
        async with asyncio.timeout(20), progress:
            await progress.wait_for(lambda: answered[version] >= target)

    clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        await answered_by("2")
        for _ in range(SWAPS):
            await stack.admin.rollback(model_name)
            await stack.served(model_name, production=1)
            await answered_by("1")
            await stack.admin.set_alias(
                model_name, "production", 2, expected_version=1, reason="roll forward"
            )
            await stack.served(model_name, production=2)
            await answered_by("2")
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert failures == []
    assert mismatches == []
    assert answered["1"] > 0 and answered["2"] > 0
