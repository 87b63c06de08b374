"""From drift to retrain: one request per episode, none before enough samples, none
within the cooldown, none for versions that do not serve production."""

from __future__ import annotations

import itertools
import random

from services.monitor.detectors import DetectorSpec
from services.monitor.drift import Decision, Drift, DriftMonitor
from services.monitor.policy import MonitorPolicy
from services.monitor.records import Label, LabelledSample, Prediction
from services.monitor.retrain import (
    ATTEMPT_LIMIT,
    CANDIDATE_FAILED,
    COOLDOWN,
    MIN_SAMPLES,
    REQUESTED,
    RetrainPolicy,
    RetrainRequest,
)


def sample(
    i: int, wrong: bool, version: int = 1, route: str = "production", shadow: bool = False
) -> LabelledSample:
    prediction = Prediction(f"e{version}-{i}", "churn", version, route, shadow, "1", 0.0, float(i))
    return LabelledSample(
        prediction, Label(prediction.id, "0" if wrong else "1", None, float(i), float(i) + 1)
    )


def feed(
    monitor: DriftMonitor,
    rates: list[tuple[int, float]],
    seed: int = 0,
    version: int = 1,
    start: int = 0,
    route: str = "production",
    shadow: bool = False,
) -> list[Decision]:
    """Labelled samples in regimes of (count, error rate); ``now`` advances 1 s per sample."""
    rng = random.Random(seed)
    decisions: list[Decision] = []
    i = start
    for count, rate in rates:
        for _ in range(count):
            labelled = sample(i, rng.random() < rate, version, route, shadow)
            decisions += monitor.observe_labelled(labelled, now=float(i))
            i += 1
    return decisions


def monitor(cooldown: float = 3600, min_samples: int = 100) -> DriftMonitor:
    counter = itertools.count()
    return DriftMonitor(
        MonitorPolicy(DetectorSpec("ADWIN"), cooldown_seconds=cooldown, retrain_min_samples=min_samples),
        new_id=lambda: f"id{next(counter)}",
    )


def test_a_flapping_detector_causes_one_retrain_request() -> None:
    m = monitor(cooldown=10_000)
    # Within one cooldown the error rate keeps jumping between 5% and 50%: the detector
    # fires again and again.
    decisions = feed(m, [(2000, 0.05), (1000, 0.5), (1000, 0.05), (1000, 0.5), (1000, 0.05), (1000, 0.5)])
    drifts = [d for d in decisions if isinstance(d, Drift)]
    requests = [d for d in decisions if isinstance(d, RetrainRequest)]
    assert len(drifts) >= 3
    assert len(requests) == 1
    request = requests[0]
    assert request.drift_event_id == drifts[0].id
    assert request.onset_time == drifts[0].change.onset_time
    assert request.parent_version == 1


def test_the_request_waits_for_enough_samples_since_the_onset() -> None:
    m = monitor(min_samples=2000)
    decisions = feed(m, [(3000, 0.1), (3000, 0.5)])
    drift = next(d for d in decisions if isinstance(d, Drift))
    request = next(d for d in decisions if isinstance(d, RetrainRequest))
    # Samples in the post-change window at detection, plus those that followed.
    samples_at_request = drift.change.window_size + (int(request.requested_at) - drift.change.sample_index)
    assert samples_at_request == 2000


def test_a_drift_that_persists_after_the_cooldown_asks_again_under_a_new_key() -> None:
    m = monitor(cooldown=1000)
    decisions = feed(m, [(3000, 0.05), (1500, 0.5), (1500, 0.05), (1500, 0.5)])
    requests = [d for d in decisions if isinstance(d, RetrainRequest)]
    assert len(requests) >= 2
    gaps = [b.requested_at - a.requested_at for a, b in itertools.pairwise(requests)]
    assert all(gap >= 1000 for gap in gaps)
    assert len({r.idempotency_key for r in requests}) == len(requests)


def test_a_retrain_that_put_nothing_live_is_retried_on_twice_the_data_then_given_up() -> None:
    policy = RetrainPolicy(cooldown_seconds=100, min_samples=50, max_attempts=3)
    assert policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=0.0, episode_id="ep") is not None
    requests, now = [], 0.0
    for _ in range(2000):
        now += 1
        request = policy.on_labelled("m", 1, now=now)
        if request is not None:
            requests.append((now, policy.episode("m").samples, request.idempotency_key))  # type: ignore[union-attr]
    assert [key for _, _, key in requests] == ["drift:m:ep:2", "drift:m:ep:3"]
    # One cooldown after each request, and only once the samples since the onset doubled.
    assert [(when, samples) for when, samples, _ in requests] == [(100.0, 150), (200.0, 250)]
    assert policy.episode("m") is None


def test_a_new_version_going_live_stops_the_retries() -> None:
    policy = RetrainPolicy(cooldown_seconds=10, min_samples=5, max_attempts=3)
    assert policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=5, now=0.0, episode_id="ep") is not None
    policy.on_version_live("m", 2)
    assert all(policy.on_labelled("m", 1, now=float(t)) is None for t in range(1, 100))


def test_a_new_version_going_live_ends_the_episode_and_starts_fresh() -> None:
    m = monitor(cooldown=10_000)
    first = feed(m, [(3000, 0.05), (1000, 0.5)])
    assert any(isinstance(d, RetrainRequest) for d in first)
    assert m.retrain.episode("churn") is not None
    # Version 2 answers production traffic: its own detectors, no episode.
    m.observe(sample(5000, False, version=2).prediction, now=5000.0)
    assert m.live_version("churn") == 2
    assert m.retrain.episode("churn") is None
    # Late labels for version 1 still update it, but cannot open an episode.
    late = feed(m, [(2000, 0.9)], version=1, start=4000)
    assert not any(isinstance(d, RetrainRequest) for d in late)
    assert m.retrain.episode("churn") is None
    # Version 2 drifts too, within the cooldown of the last request: a drift event, no request.
    second = feed(m, [(3000, 0.05), (1000, 0.5)], version=2, start=6000)
    assert any(isinstance(d, Drift) and d.version == 2 for d in second)
    assert not any(isinstance(d, RetrainRequest) for d in second)


def test_a_rollback_resets_the_version_it_returns_to() -> None:
    m = monitor()
    feed(m, [(3000, 0.05), (1000, 0.5)])
    m.observe(sample(9000, False, version=2).prediction, now=9000.0)
    m.version_live("churn", 1)
    quality = m.quality("churn", 1)
    assert quality is not None
    assert quality.concept.samples == 0
    assert quality.last_drift is None
    assert quality.labelled == 4000
    assert m.live_version("churn") == 1


def test_shadow_and_canary_drift_raise_events_but_never_retrain() -> None:
    m = monitor()
    shadow = feed(m, [(3000, 0.05), (1000, 0.5)], route="shadow", shadow=True)
    canary = feed(m, [(3000, 0.05), (1000, 0.5)], version=2, route="candidate")
    assert any(isinstance(d, Drift) for d in shadow) and any(isinstance(d, Drift) for d in canary)
    assert not any(isinstance(d, RetrainRequest) for d in shadow + canary)


def test_an_error_rate_that_falls_is_drift_but_not_a_reason_to_retrain() -> None:
    m = monitor()
    decisions = feed(m, [(3000, 0.4), (3000, 0.05)])
    assert any(isinstance(d, Drift) for d in decisions)
    assert not any(isinstance(d, RetrainRequest) for d in decisions)
    assert m.retrain.episode("churn") is None


def test_the_episode_and_cooldown_survive_a_restart() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    request = policy.on_drift("m", 3, "d1", onset_time=5.0, window_size=50, now=100.0, episode_id="ep")
    assert request is not None
    state = policy.export("m")

    restarted = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    restarted.restore("m", state)
    assert (
        restarted.on_drift("m", 3, "d2", onset_time=9.0, window_size=50, now=200.0, episode_id="ep2") is None
    )
    # A new version, then its drift, still within the cooldown of the first request.
    restarted.on_version_live("m", 4)
    assert (
        restarted.on_drift("m", 4, "d3", onset_time=9.0, window_size=50, now=300.0, episode_id="ep3") is None
    )
    later = restarted.on_labelled("m", 4, now=701.0)
    assert later is not None and later.idempotency_key == "drift:m:ep3"


def test_rolling_accuracy_counts_each_labelled_sample() -> None:
    m = monitor()
    for i in range(10):
        m.observe_labelled(sample(i, wrong=i < 3), now=float(i))
    quality = m.quality("churn", 1)
    assert quality is not None
    assert quality.accuracy == 0.7
    status = m.status(now=0.0)[0]
    assert status["model"] == "churn" and status["live_version"] == 1
    assert status["versions"][0]["labelled"] == 10


# --- what holds a retrain back, and until when ------------------------------------------


def held(policy: RetrainPolicy, now: float) -> tuple[str, float | None] | None:
    hold = policy.hold("m", now)
    return None if hold is None else (hold.reason, hold.until)


def test_without_an_episode_nothing_is_held() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=100)
    assert policy.hold("m", now=0.0) is None


def test_too_few_samples_hold_the_retrain_until_enough_arrive() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=100)
    policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=40, now=10.0, episode_id="ep")
    hold = policy.hold("m", now=10.0)
    assert hold is not None and (hold.reason, hold.until) == (MIN_SAMPLES, None)
    assert hold.detail == "40 of 100 labelled samples since the onset (attempt 1 of 3)"
    for t in range(59):
        policy.on_labelled("m", 1, now=11.0 + t)
    assert policy.hold("m", now=70.0).detail.startswith("99 of 100")  # type: ignore[union-attr]
    assert policy.on_labelled("m", 1, now=71.0) is not None
    assert held(policy, 71.0) == (REQUESTED, 671.0)


def test_a_requested_retrain_holds_the_next_until_its_cooldown_ends() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    assert (
        policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=100.0, episode_id="ep") is not None
    )
    hold = policy.hold("m", now=150.0)
    assert hold is not None and (hold.reason, hold.until) == (REQUESTED, 700.0)
    assert hold.detail == (
        "retrain requested (attempt 1 of 3); another is asked for when the cooldown ends "
        "unless a new version goes live first"
    )
    # The candidate was registered but is not live yet (waiting for approval, say).
    policy.on_result("m", "drift:m:ep", "registered", "version 2 registered")
    assert policy.hold("m", now=150.0).detail.startswith(  # type: ignore[union-attr]
        "retrain requested (attempt 1 of 3, version 2 registered)"
    )


def test_a_candidate_that_failed_holds_the_next_attempt_until_the_cooldown_ends() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=40)
    policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=100.0, episode_id="ep")
    # An outcome for another request (an older attempt, or someone else's) changes nothing.
    policy.on_result("m", "drift:m:other", "gates_failed", "min_metric")
    assert held(policy, 150.0) == (REQUESTED, 700.0)
    policy.on_result("m", "drift:m:ep", "gates_failed", "gates failed: min_metric (0.61 < 0.75)")
    hold = policy.hold("m", now=150.0)
    assert hold is not None and (hold.reason, hold.until) == (CANDIDATE_FAILED, 700.0)
    assert hold.detail == (
        "the retrain (attempt 1 of 3) ended gates_failed: gates failed: min_metric (0.61 < 0.75); "
        "another is asked for when the cooldown ends"
    )
    # The next attempt starts with no outcome, and needs twice the samples.
    assert policy.on_labelled("m", 1, now=700.0) is None
    assert held(policy, 700.0) == (MIN_SAMPLES, None)
    assert policy.hold("m", now=700.0).detail == (  # type: ignore[union-attr]
        "51 of 80 labelled samples since the onset (attempt 2 of 3)"
    )


def test_the_last_attempt_holds_until_the_episode_gives_up() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=10, max_attempts=1)
    policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=100.0, episode_id="ep")
    assert held(policy, 150.0) == (ATTEMPT_LIMIT, 700.0)
    policy.on_result("m", "drift:m:ep", "failed", "the dataset has too few rows")
    hold = policy.hold("m", now=150.0)
    assert hold is not None and (hold.reason, hold.until) == (ATTEMPT_LIMIT, 700.0)
    assert "ended failed: the dataset has too few rows; the episode gives up" in hold.detail
    # At the end of the cooldown the episode is over: nothing left to hold.
    assert policy.on_labelled("m", 1, now=700.0) is None
    assert policy.hold("m", now=700.0) is None


def test_the_cooldown_of_the_previous_request_holds_a_new_episode() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=100.0, episode_id="ep")
    policy.on_version_live("m", 2)
    assert policy.hold("m", now=200.0) is None
    policy.on_drift("m", 2, "d2", onset_time=150.0, window_size=50, now=300.0, episode_id="ep2")
    hold = policy.hold("m", now=300.0)
    assert hold is not None and (hold.reason, hold.until) == (COOLDOWN, 700.0)
    assert hold.detail == "the previous retrain of m was requested 200 s ago; 600 s must pass between two"
    assert policy.last_request("m") == 100.0
    # Once it ends, the next labelled sample asks.
    assert policy.hold("m", now=700.0) is None
    assert policy.on_labelled("m", 2, now=700.0) is not None


def test_the_outcome_survives_a_restart() -> None:
    policy = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    policy.on_drift("m", 1, "d1", onset_time=0.0, window_size=50, now=100.0, episode_id="ep")
    policy.on_result("m", "drift:m:ep", "gates_failed", "min_metric")
    restarted = RetrainPolicy(cooldown_seconds=600, min_samples=10)
    restarted.restore("m", policy.export("m"))
    assert held(restarted, 150.0) == (CANDIDATE_FAILED, 700.0)
    # State exported before outcomes were kept still restores.
    old = policy.export("m")
    del old["episode"]["outcome"], old["episode"]["outcome_detail"]
    restarted.restore("m", old)
    assert held(restarted, 150.0) == (REQUESTED, 700.0)


def test_the_monitor_status_says_what_holds_the_retrain_and_until_when() -> None:
    m = monitor(cooldown=10_000)
    feed(m, [(3000, 0.05), (1000, 0.5)])
    retrain = m.status(now=4000.0)[0]["retrain"]
    asked = retrain["last_requested_at"]
    assert asked is not None and retrain["cooldown_until"] == asked + 10_000
    assert retrain["hold"]["reason"] == REQUESTED and retrain["hold"]["until"] == asked + 10_000
