"""Rounds on Flower's real SuperLink and SuperNodes: what the server receives, what it refuses,
and a site that disappears mid-round.

Each test runs a federation of site agents on loopback (TLS, a throwaway CA) from the
federation's environment, and reads what the server left: ``status.json`` (rounds, sites,
refusals) and ``receipts.jsonl`` (the structure of every reply the server received).
"""

from __future__ import annotations

from typing import Any

import pytest

from services.federation.status import RunStatus, read_receipts
from tests.integration.federation.conftest import (
    FEATURES,
    MALICIOUS_CLIENTAPP,
    LoopbackFederation,
    spec,
)

# Flower's processes start a ClientApp per message: minutes on a busy two-core machine.
pytestmark = [pytest.mark.timeout(900)]

MODEL_SHAPES = [[1, len(FEATURES)], [1]]
MASKED_SHAPES = [[1], [1, len(FEATURES)], [1]]


def _train_replies(run_dir: Any) -> list[dict[str, Any]]:
    return [r for r in read_receipts(run_dir) if r["type"] == "train" and not r.get("error")]


def _largest_array(receipt: dict[str, Any]) -> int:
    """Entries in the largest array a reply carried, in the clear or serialized in a config."""
    sizes = [1]
    for record in [*receipt.get("arrays", {}).values(), *receipt.get("configs", {}).values()]:
        for value in record.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and "array" in item:
                    sizes.append(_entries(item["array"][0]))
    return max(sizes)


def _entries(shape: list[int]) -> int:
    count = 1
    for dimension in shape:
        count *= dimension
    return count


def test_updates_that_are_not_the_models_arrays_are_refused_with_the_reason(
    federation: LoopbackFederation,
) -> None:
    """In the clear, a NaN update, one of the wrong shape, and a site's rows in place of
    parameters are each refused and named; the honest sites' round still counts."""
    federation.agent("honest-a", 0, plain=True)
    federation.agent("honest-b", 1, plain=True)
    federation.attacker("nan-site", 2, "nan")
    federation.attacker("shape-site", 0, "shape")
    federation.attacker("rows-site", 1, "rows")
    run_dir = federation.submit(
        spec(
            secure_aggregation={"enabled": False},
            privacy={"enabled": False},
            strategy={"expected_sites": 5},
        ),
        clientapp=MALICIOUS_CLIENTAPP,
    )
    status = federation.finished(run_dir, within=300)

    assert status.state == "finished", status.error
    (first,) = status.rounds
    assert first.applied and first.aggregated == ["honest-a", "honest-b"]
    assert "NaN" in first.refused["nan-site"]
    assert "array 0 has shape (1, 5), the model's is (1, 6)" in first.refused["shape-site"]
    assert "array 0 has shape (240, 6)" in first.refused["rows-site"]
    assert set(first.refused) == {"nan-site", "shape-site", "rows-site"}
    replies = _train_replies(run_dir)
    refused = {r["site"]: r["refused"] for r in replies if "refused" in r}
    assert refused == first.refused
    for reply in replies:
        if "refused" not in reply:
            (parameters,) = reply["arrays"].values()
            assert [item["array"] for item in parameters.values()] == [[s, "float64"] for s in MODEL_SHAPES]
            assert _largest_array(reply) <= len(FEATURES)
    # Every site still scored the final model on its own rows; only metrics came back.
    assert set(status.evaluation["sites"]) == {"honest-a", "honest-b", "nan-site", "shape-site", "rows-site"}


def test_secure_aggregation_survives_a_site_vanishing_mid_round_and_refuses_a_malformed_one(
    federation: LoopbackFederation,
) -> None:
    """Under SecAgg+ and differential privacy: a site killed as its round starts is dropped
    after the round timeout without stalling the round (min_sites 2), a masked vector of
    the wrong shape is refused, and the server never receives a site's parameters in the
    clear, only masked integer vectors of the model's shapes."""
    for name, skew in (("site-a", 0), ("site-b", 1), ("site-c", 2)):
        federation.agent(name, skew)
    federation.attacker("site-d", 0, "shape")
    run_dir = federation.submit(
        spec(
            secure_aggregation={"enabled": True, "num_shares": 1.0, "reconstruction_threshold": 0.5},
            privacy={"enabled": True, "noise_multiplier": 1.0, "clipping_norm": 1.0},
            strategy={"rounds": 2, "expected_sites": 4, "round_timeout_seconds": 45},
        ),
        clientapp=MALICIOUS_CLIENTAPP,
    )

    def second_round_asks_c(status: RunStatus) -> bool:
        return any(r.number == 2 and "site-c" in r.asked for r in status.rounds) or status.state == "failed"

    federation.wait(run_dir, second_round_asks_c, within=400)
    federation.sites["site-c"].kill()
    status = federation.finished(run_dir, within=300)

    assert status.state == "finished", status.error
    first, second = status.rounds
    assert first.applied and first.aggregated == ["site-a", "site-b", "site-c"]
    assert "array 1 has shape (1, 5), the masked vector's is (1, 6)" in first.refused["site-d"]
    assert second.applied and second.aggregated == ["site-a", "site-b"]
    assert second.dropped == ["site-c"] and "site-d" in second.refused
    assert second.finished_at - second.started_at < 4 * 45 + 30  # bounded by the round timeout
    assert status.epsilon > 0 and first.noise_std > 0
    replies = _train_replies(run_dir)
    assert replies, "no training reply was received"
    for reply in replies:
        assert all(not record for record in reply["arrays"].values()), "parameters arrived in the clear"
        masked = reply["configs"].get("secaggplus_configs", {}).get("masked_params")
        if masked is not None and "refused" not in reply:
            assert [item["array"] for item in masked] == [[s, "int64"] for s in MASKED_SHAPES]
        # Keys, ciphertexts, shares and masked vectors: nothing the size of a site's rows.
        assert _largest_array(reply) <= len(FEATURES), reply
