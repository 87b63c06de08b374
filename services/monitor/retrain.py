"""When drift becomes a retrain request: once per drift episode, at most once per cooldown.

A detector on a noisy stream can fire several times for one change (it flaps). Each alarm
is worth a drift event, but a retrain is costly and a storm of them helps no one, so
alarms are grouped into *episodes*, one per model:

- the first alarm on the live version opens an episode, whose onset is that alarm's onset;
- the episode asks for one retrain once enough labelled samples have arrived since the
  onset to train on, and once the cooldown since the model's previous request has passed;
- it ends when another version goes live (the retrain worked, or someone rolled back);
- one cooldown after a request that put no new version live (the candidate failed its
  gates, say), the episode asks again, each time once twice as many samples as the time
  before have arrived since the onset: a harder change gets more data. After
  ``max_attempts`` requests it gives up, and a later alarm opens a new episode.

Whenever an episode is not asking (too few samples, the cooldown, a request under way, a
candidate that failed its gates, the attempts used up), :meth:`RetrainPolicy.hold` says why
and until when, for the status endpoint, the metrics and ``mlops drift status``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MIN_SAMPLES = "min_samples"
"""Too few labelled samples since the onset to train on: ends on samples, not at a time."""
COOLDOWN = "cooldown"
"""The model's previous request is less than a cooldown old."""
REQUESTED = "requested"
"""This episode's retrain was requested; no new version is live yet."""
CANDIDATE_FAILED = "candidate_failed"
"""This episode's retrain ended without a version to promote (gates failed, or the job failed)."""
ATTEMPT_LIMIT = "attempt_limit"
"""The episode's last attempt was made: it gives up when that attempt's cooldown ends."""

FAILED_OUTCOMES = ("gates_failed", "failed")
"""Train outcomes that put no version live (see :meth:`RetrainPolicy.on_result`)."""


@dataclass(frozen=True)
class Hold:
    """Why a drift episode is not asking for a retrain now, and until when."""

    reason: str
    """One of ``min_samples``, ``cooldown``, ``requested``, ``candidate_failed``, ``attempt_limit``."""
    detail: str
    """The same in words, with the figures."""
    until: float | None
    """When it ends (epoch seconds); None when it ends on samples rather than at a time."""


@dataclass(frozen=True)
class Episode:
    """One model's drift, from its first alarm until it is dealt with."""

    id: str
    model: str
    version: int
    """The live version that drifted: the parent of the retrained one."""
    drift_event_id: str
    """The drift event that opened the episode."""
    onset_time: float
    """Event time the change began (epoch seconds): training data starts here."""
    opened_at: float
    samples: int
    """Labelled samples of the drifted version since the onset."""
    requested_at: float | None = None
    """When the current attempt's retrain was requested; None until then."""
    attempt: int = 0
    """Requests made before the current one that put no new version live."""
    outcome: str = ""
    """What became of the current attempt's retrain (``registered``, ``gates_failed``, ``failed``);
    empty until the trainer says."""
    outcome_detail: str = ""

    @property
    def request_key(self) -> str:
        """The idempotency key of the current attempt's request."""
        return f"drift:{self.model}:{self.id}" + (f":{self.attempt + 1}" if self.attempt else "")


@dataclass(frozen=True)
class RetrainRequest:
    """The decision to retrain a model on data since a drift's onset."""

    model: str
    parent_version: int
    idempotency_key: str
    """The same for every request of one attempt, so a redelivered request coalesces."""
    drift_event_id: str
    onset_time: float
    requested_at: float


class RetrainPolicy:
    """Groups alarms into episodes and decides when each asks for its one retrain.

    Parameters
    ----------
    cooldown_seconds
        Least time between two requests for one model.
    min_samples
        Labelled samples needed since the onset before a retrain is worth it; doubled at
        each further attempt.
    max_attempts
        Requests per episode at most.

    Examples
    --------
    A detector that fires three times within the cooldown causes one request:

    >>> policy = RetrainPolicy(cooldown_seconds=600, min_samples=100)
    >>> policy.on_drift("m", 1, "d1", onset_time=50.0, window_size=80, now=100.0, episode_id="ep1")
    >>> [policy.on_labelled("m", 1, now=100.0 + i) for i in range(19)].count(None)
    19
    >>> request = policy.on_labelled("m", 1, now=120.0)
    >>> request.idempotency_key, request.onset_time
    ('drift:m:ep1', 50.0)
    >>> policy.on_drift("m", 1, "d2", onset_time=90.0, window_size=500, now=130.0, episode_id="ep2")
    >>> policy.on_labelled("m", 1, now=131.0) is None
    True

    No new version went live within the cooldown: the episode asks again, on more data.

    >>> [policy.on_labelled("m", 1, now=720.0 + i) for i in range(98)].count(None)
    98
    >>> policy.on_labelled("m", 1, now=820.0).idempotency_key
    'drift:m:ep1:2'

    Until the next attempt, :meth:`hold` says why nothing more is asked, and until when:

    >>> hold = policy.hold("m", now=830.0)
    >>> hold.reason, hold.until
    ('requested', 1420.0)
    >>> policy.on_result("m", "drift:m:ep1:2", "gates_failed", "accuracy 0.61 < 0.75")
    >>> policy.hold("m", now=830.0).detail
    'the retrain (attempt 2 of 3) ended gates_failed: accuracy 0.61 < 0.75; another is asked for when the cooldown ends'
    """

    def __init__(self, cooldown_seconds: float, min_samples: int, max_attempts: int = 3):
        self.cooldown_seconds = cooldown_seconds
        self.min_samples = min_samples
        self.max_attempts = max_attempts
        self._episodes: dict[str, Episode] = {}
        self._last_request: dict[str, float] = {}

    def episode(self, model: str) -> Episode | None:
        return self._episodes.get(model)

    def on_drift(
        self,
        model: str,
        version: int,
        drift_event_id: str,
        *,
        onset_time: float,
        window_size: int,
        now: float,
        episode_id: str,
    ) -> RetrainRequest | None:
        """An alarm on the live ``version``: opens an episode unless one is under way."""
        self._close_if_done(model, now)
        if model not in self._episodes:
            self._episodes[model] = Episode(
                id=episode_id,
                model=model,
                version=version,
                drift_event_id=drift_event_id,
                onset_time=onset_time,
                opened_at=now,
                samples=window_size,
            )
        return self._request_if_due(model, now)

    def on_labelled(self, model: str, version: int, now: float) -> RetrainRequest | None:
        """A labelled sample of ``version`` arrived."""
        self._close_if_done(model, now)
        episode = self._episodes.get(model)
        if episode is None or episode.version != version:
            return None
        self._episodes[model] = dataclasses.replace(episode, samples=episode.samples + 1)
        return self._request_if_due(model, now)

    def on_result(self, model: str, key: str, outcome: str, detail: str = "") -> None:
        """The trainer's outcome for the request with idempotency ``key``: kept on the episode
        (for :meth:`hold`) when it is the current attempt's."""
        episode = self._episodes.get(model)
        if episode is not None and episode.requested_at is not None and episode.request_key == key:
            self._episodes[model] = dataclasses.replace(episode, outcome=outcome, outcome_detail=detail)

    def last_request(self, model: str) -> float | None:
        """When the model's latest retrain was requested."""
        return self._last_request.get(model)

    def hold(self, model: str, now: float) -> Hold | None:
        """Why the model's drift episode is not asking for a retrain at ``now``; None when
        there is no episode (nothing to hold back) or when the next labelled sample asks."""
        episode = self._episodes.get(model)
        if episode is None:
            return None
        attempt = f"attempt {episode.attempt + 1} of {self.max_attempts}"
        if episode.requested_at is not None:
            until = episode.requested_at + self.cooldown_seconds
            last = episode.attempt + 1 >= self.max_attempts
            then = (
                "the episode gives up when the cooldown ends"
                if last
                else "another is asked for when the cooldown ends"
            )
            if episode.outcome in FAILED_OUTCOMES:
                why = f": {episode.outcome_detail}" if episode.outcome_detail else ""
                return Hold(
                    ATTEMPT_LIMIT if last else CANDIDATE_FAILED,
                    f"the retrain ({attempt}) ended {episode.outcome}{why}; {then}",
                    until,
                )
            registered = f", {episode.outcome_detail}" if episode.outcome else ""
            unless = "" if last else " unless a new version goes live first"
            return Hold(
                ATTEMPT_LIMIT if last else REQUESTED,
                f"retrain requested ({attempt}{registered}); {then}{unless}",
                until,
            )
        needed = self.min_samples * 2**episode.attempt
        if episode.samples < needed:
            return Hold(
                MIN_SAMPLES,
                f"{episode.samples} of {needed} labelled samples since the onset ({attempt})",
                None,
            )
        previous = self._last_request.get(model)
        if previous is not None and now - previous < self.cooldown_seconds:
            return Hold(
                COOLDOWN,
                f"the previous retrain of {model} was requested {now - previous:.0f} s ago; "
                f"{self.cooldown_seconds:.0f} s must pass between two",
                previous + self.cooldown_seconds,
            )
        return None

    def on_version_live(self, model: str, version: int) -> None:
        """Another version serves production now: the episode of the old one is over."""
        episode = self._episodes.get(model)
        if episode is not None and episode.version != version:
            del self._episodes[model]

    def _close_if_done(self, model: str, now: float) -> None:
        episode = self._episodes.get(model)
        if (
            episode
            and episode.requested_at is not None
            and now - episode.requested_at >= self.cooldown_seconds
        ):
            if episode.attempt + 1 < self.max_attempts:
                self._episodes[model] = dataclasses.replace(
                    episode, requested_at=None, attempt=episode.attempt + 1, outcome="", outcome_detail=""
                )
            else:
                del self._episodes[model]

    def _request_if_due(self, model: str, now: float) -> RetrainRequest | None:
        episode = self._episodes[model]
        if episode.requested_at is not None or episode.samples < self.min_samples * 2**episode.attempt:
            return None
        last = self._last_request.get(model)
        if last is not None and now - last < self.cooldown_seconds:
            return None
        self._episodes[model] = dataclasses.replace(episode, requested_at=now)
        self._last_request[model] = now
        return RetrainRequest(
            model=model,
            parent_version=episode.version,
            idempotency_key=episode.request_key,
            drift_event_id=episode.drift_event_id,
            onset_time=episode.onset_time,
            requested_at=now,
        )

    def export(self, model: str) -> dict[str, Any]:
        """The model's state as JSON, to survive a restart or a move to another process."""
        episode = self._episodes.get(model)
        return {
            "episode": dataclasses.asdict(episode) if episode else None,
            "last_request": self._last_request.get(model),
        }

    def restore(self, model: str, state: dict[str, Any]) -> None:
        """Take back what :meth:`export` wrote."""
        self._episodes.pop(model, None)
        self._last_request.pop(model, None)
        if state.get("episode"):
            self._episodes[model] = Episode(**state["episode"])
        if state.get("last_request") is not None:
            self._last_request[model] = float(state["last_request"])
