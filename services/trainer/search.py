"""Model search: configurations across families, narrowed by successive halving.

Every configuration is first fitted on a small slice of the training rows; the best
third go on to a slice three times larger, and so on until the survivors see every
row. Cheap configurations are thus ruled out cheaply, and the search stays inside the
time it is given: when its deadline passes, it stops where it is and returns the best
configuration of the furthest rung reached (and says it was truncated).

Slices are the newest rows of the training part, so each rung is a superset of the
last and recent data, the data the model will meet, weighs in from the first rung.
Everything random is drawn from the spec's seed: same spec, same rows, same winner.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.proto.mlops.v1.events_pb2 import SearchTrial
from services.trainer.errors import BudgetExceeded, TrainingFailed
from services.trainer.pipelines import Family
from services.trainer.plan import Candidate
from services.trainer.scoring import Metric

ETA = 3
"""Each rung keeps the best 1/ETA and gives them ETA times the rows."""


@dataclass(frozen=True)
class Configuration:
    family: Family
    params: dict[str, Any]

    def describe(self) -> str:
        return f"{self.family.name}({json.dumps(self.params, sort_keys=True, default=str)})"


@dataclass(frozen=True)
class Trial:
    """One configuration fitted on one rung's rows, and how it scored on validation."""

    configuration: int
    family: str
    params: dict[str, Any]
    rung: int
    rows: int
    score: float
    seconds: float
    error: str = ""

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "configuration": self.configuration,
            "family": self.family,
            "params": self.params,
            "rung": self.rung,
            "rows": self.rows,
            "score": None if math.isnan(self.score) else round(self.score, 6),
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            record["error"] = self.error
        return record

    def as_message(self) -> SearchTrial:
        """The trial as the trainer's results carry it (and the registry's runs keep it)."""
        trial = SearchTrial(
            configuration=self.configuration,
            family=self.family,
            params_json=json.dumps(self.params, sort_keys=True, default=str),
            rung=self.rung,
            rows=self.rows,
            seconds=self.seconds,
            error=self.error,
        )
        if math.isfinite(self.score):
            trial.score = self.score
        return trial


@dataclass
class SearchResult:
    best: Configuration
    best_score: float
    trials: list[Trial] = field(default_factory=list)
    truncated: bool = False


class Deadline:
    """A point in time on an injectable clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.started = clock()
        self.at = self.started + seconds

    def passed(self) -> bool:
        return self._clock() >= self.at

    def elapsed(self) -> float:
        return self._clock() - self.started


def configurations(candidates: Sequence[Candidate], per_family: int, seed: int) -> list[Configuration]:
    """Each candidate's fixed parameters first, then up to ``per_family - 1`` draws from its space."""
    rng = np.random.default_rng(seed)
    out: list[Configuration] = []
    seen: set[str] = set()
    for candidate in candidates:
        draws = [dict(candidate.params)]
        if candidate.space:
            for _ in range(per_family - 1):
                sampled = {name: dist.sample(rng) for name, dist in sorted(candidate.space.items())}
                draws.append({**candidate.params, **sampled})
        for params in draws:
            configuration = Configuration(candidate.family, params)
            if configuration.describe() not in seen:
                seen.add(configuration.describe())
                out.append(configuration)
    return out


def rung_sizes(configurations: int, rows: int, min_rows: int) -> list[int]:
    """Rows per rung: the last rung uses all ``rows``, each earlier one 1/ETA of the next."""
    rungs = 1 + math.floor(math.log(max(configurations, 1)) / math.log(ETA) + 1e-9)
    sizes = [max(min(min_rows, rows), int(rows / ETA ** (rungs - 1 - i))) for i in range(rungs)]
    sizes[-1] = rows
    # A rung no larger than the one before it teaches nothing new: merge it away.
    return sorted(set(sizes))


def successive_halving(
    configs: Sequence[Configuration],
    evaluate: Callable[[Configuration, int], float],
    *,
    rows: int,
    min_rows: int,
    metric: Metric,
    deadline: Deadline,
    on_trial: Callable[[Trial, int, int], None] = lambda trial, done, planned: None,
) -> SearchResult:
    """Run the search; ``evaluate(configuration, n_rows)`` fits on the newest ``n_rows`` and scores.

    ``evaluate`` may raise: the trial is recorded with its error and scores ``nan``.
    """
    sizes = rung_sizes(len(configs), rows, min_rows)
    planned = sum(max(1, math.ceil(len(configs) / ETA**i)) for i in range(len(sizes)))
    alive = list(range(len(configs)))
    trials: list[Trial] = []
    truncated = False
    for rung, size in enumerate(sizes):
        scored: list[tuple[int, float]] = []
        for index in alive:
            if deadline.passed():
                truncated = True
                break
            trial = _run_trial(configs[index], index, rung, size, evaluate)
            trials.append(trial)
            scored.append((index, trial.score))
            on_trial(trial, len(trials), planned)
        if truncated and not any(math.isfinite(s) for _, s in scored):
            # This rung had no finished trial: the previous rung's standings stand.
            break
        ranked = sorted(scored, key=lambda item: (metric.rank_key(item[1]), item[0]))
        alive = [index for index, _ in ranked]
        if truncated or rung == len(sizes) - 1:
            break
        keep = max(1, math.ceil(len(alive) / ETA))
        alive = alive[:keep]
    finished = [t for t in trials if math.isfinite(t.score)]
    if not finished:
        if truncated:
            raise BudgetExceeded(
                f"the search's time ran out before any of {len(configs)} configurations finished"
            )
        errors = "; ".join(sorted({f"{t.family}: {t.error}" for t in trials if t.error}))
        raise TrainingFailed(f"every configuration failed: {errors}")
    top_rung = max(t.rung for t in finished)
    best_trial = min(
        (t for t in finished if t.rung == top_rung), key=lambda t: (metric.rank_key(t.score), t.configuration)
    )
    return SearchResult(configs[best_trial.configuration], best_trial.score, trials, truncated)


def _run_trial(
    configuration: Configuration,
    index: int,
    rung: int,
    size: int,
    evaluate: Callable[[Configuration, int], float],
) -> Trial:
    started = time.perf_counter()
    try:
        score = float(evaluate(configuration, size))
        error = "" if math.isfinite(score) else "score undefined on the validation rows"
    except Exception as exc:  # a failing configuration is a result of the search, not its end
        score, error = math.nan, f"{type(exc).__name__}: {exc}"
    return Trial(
        configuration=index,
        family=configuration.family.name,
        params=configuration.params,
        rung=rung,
        rows=size,
        score=score if math.isfinite(score) else math.nan,
        seconds=time.perf_counter() - started,
        error=error[:300],
    )
