"""Concurrent requests share predict calls; each still gets exactly its own rows' answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from services.serving.batching import SETTLE_TURNS, Batcher
from services.serving.errors import InvalidInput, Overloaded
from services.serving.predictor import Outputs, Predictor
from tests.unit.serving.conftest import Fitted


class Recording:
    """The real predictor's predict, remembering the batch sizes it was called with."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.calls: list[int] = []

    def __call__(self, matrix: np.ndarray[Any, Any]) -> Outputs:
        self.calls.append(int(matrix.shape[0]))
        if np.any(matrix == -999):
            raise ValueError("found a poisoned value")
        return self.predictor.predict(matrix)


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool


async def test_requests_queued_during_a_predict_call_share_the_next_one(
    classifier: Fitted, executor: concurrent.futures.Executor
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    recording = Recording(predictor)
    batcher = Batcher(recording, executor, max_batch_rows=64)
    rows = [classifier.X[i : i + 1 + i % 3] for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(r) for r in rows))
    for r, outputs in zip(rows, results, strict=True):
        np.testing.assert_allclose(outputs["probabilities"], classifier.estimator.predict_proba(r))
        assert outputs["label"].shape == (r.shape[0],)
    assert sum(recording.calls) == sum(r.shape[0] for r in rows)
    assert len(recording.calls) < len(rows) / 4
    assert max(recording.calls) <= 64


async def test_a_lone_request_is_not_delayed_and_batching_off_means_one_call_each(
    classifier: Fitted, executor: concurrent.futures.Executor
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    recording = Recording(predictor)
    unbatched = Batcher(recording, executor, max_batch_rows=1)
    await asyncio.gather(*(unbatched.submit(classifier.X[i : i + 1]) for i in range(10)))
    assert recording.calls == [1] * 10


async def test_under_concurrent_traffic_max_wait_gathers_requests_that_arrive_shortly_after(
    classifier: Fitted,
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    recording = Recording(predictor)
    batcher = Batcher(recording, None, max_batch_rows=8, max_wait=5.0)
    await asyncio.gather(batcher.submit(classifier.X[:1]), batcher.submit(classifier.X[1:2]))  # overlapping
    first = asyncio.ensure_future(batcher.submit(classifier.X[:1]))
    for _ in range(SETTLE_TURNS + 2):  # let the batcher take the request and start waiting for company
        await asyncio.sleep(0)
    assert recording.calls == [2]
    rest = [asyncio.ensure_future(batcher.submit(classifier.X[i : i + 1])) for i in range(1, 8)]
    await asyncio.wait_for(asyncio.gather(first, *rest), 2.0)  # a full batch ends the 5 s wait
    assert recording.calls == [2, 8]


async def test_a_request_the_model_refuses_fails_alone(
    classifier: Fitted, executor: concurrent.futures.Executor
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    batcher = Batcher(Recording(predictor), executor, max_batch_rows=64)
    poisoned = np.full((1, 4), -999.0)
    good = [classifier.X[i : i + 1] for i in range(5)]
    results = await asyncio.gather(
        *(batcher.submit(r) for r in [*good[:2], poisoned, *good[2:]]), return_exceptions=True
    )
    assert isinstance(results[2], InvalidInput)
    assert "the model refused the input: found a poisoned value" in str(results[2])
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 2)


async def test_a_full_queue_refuses_with_overloaded(
    classifier: Fitted, executor: concurrent.futures.Executor
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    batcher = Batcher(
        Recording(predictor), executor, max_batch_rows=4, max_queue_rows=10, label="'m' version 1"
    )
    results = await asyncio.gather(
        *(batcher.submit(classifier.X[:4]) for _ in range(6)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert refused, results
    assert "model 'm' version 1 has" in str(refused[0]) and "limit 10" in str(refused[0])
    assert sum(isinstance(r, dict) for r in results) >= 2


async def test_a_cancelled_request_is_skipped(
    classifier: Fitted, executor: concurrent.futures.Executor
) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    recording = Recording(predictor)
    batcher = Batcher(recording, executor, max_batch_rows=64)
    running = asyncio.ensure_future(batcher.submit(classifier.X[:1]))
    await asyncio.sleep(0)
    doomed = asyncio.ensure_future(batcher.submit(classifier.X[:7]))
    kept = asyncio.ensure_future(batcher.submit(classifier.X[:2]))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(running, kept)
    assert 7 not in recording.calls and sum(recording.calls) == 3


async def test_an_isolated_request_never_waits_for_company(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    recording = Recording(predictor)
    batcher = Batcher(recording, None, max_batch_rows=8, max_wait=30.0)
    # With a 30 s wait applied, this would time out: alone, the request goes at once.
    await asyncio.wait_for(batcher.submit(classifier.X[:1]), 2.0)
    await asyncio.wait_for(batcher.submit(classifier.X[:1]), 2.0)
    assert recording.calls == [1, 1]
