"""Serving's metrics merged across the processes of a replica (prometheus_client's
multiprocess mode): counts add up, a model's fallback shows while any worker is in it, and a
model no longer served reads 0, without the library's warning that it cannot remove a series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.http import create_app
from services.common.metrics import SHARED_DIRECTORY_VARIABLE

WORKER = """
import sys, warnings
from types import SimpleNamespace
warnings.simplefilter("error")  # the library warns when asked to remove a shared series
from services.serving.metrics import ServingMetrics
from services.serving.models import ModelState

requests, fallback = int(sys.argv[1]), int(sys.argv[2])
metrics = ServingMetrics()
for _ in range(requests):
    metrics.request("m", "1", "OK", 0.001, 1)
ServingMetrics.models({"m": SimpleNamespace(state=ModelState.READY, fallback_from=2)})
if not fallback:
    ServingMetrics.models({})
"""


def worker(directory: Path, requests: int, fallback: bool) -> subprocess.Popen[bytes]:
    env = {SHARED_DIRECTORY_VARIABLE: str(directory), "OMP_NUM_THREADS": "1", "PATH": ""}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(requests), str(int(fallback))], env=env)


async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    transport = httpx.ASGITransport(app=create_app("serving", "1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(("fallbacks", "expected"), [((True, False), 2.0), ((False, False), 0.0)])
async def test_a_scrape_merges_the_workers_of_a_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallbacks: tuple[bool, bool], expected: float
) -> None:
    workers = [worker(tmp_path, 3, fallbacks[0]), worker(tmp_path, 4, fallbacks[1])]
    assert [w.wait(60) for w in workers] == [0, 0]
    monkeypatch.setenv(SHARED_DIRECTORY_VARIABLE, str(tmp_path))

    samples = await scrape()

    assert samples[("mlops_serving_requests_total", (("code", "OK"), ("model", "m"), ("version", "1")))] == 7
    assert samples[("mlops_serving_production_fallback", (("model", "m"),))] == expected
    assert not [key for key in samples if "pid" in dict(key[1])]
