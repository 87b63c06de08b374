"""Joining predictions with labels that arrive before or after them, with expiry.

One :class:`JoinEntry` per row id holds what has arrived for that id: the predictions
(one per model version and route, so a shadow answer joins the same label as the
production one) and the label. An entry lives for the join window from when its id was
first seen, joined or not: while it lives, a redelivered prediction or label is
recognised as a duplicate and not counted twice. When it expires, whatever never found
its other half is counted as unmatched.
"""

from __future__ import annotations

import heapq
import zlib
from dataclasses import dataclass

from services.monitor.records import Label, LabelledSample, Prediction


def partition_of(key: str, partitions: int) -> int:
    """The monitor's own partitioning of its internal topics: stable across processes
    and versions, so a row id (or a model name) always lands in the same partition.

    >>> partition_of("e1", 4) == partition_of("e1", 4)
    True
    """
    return zlib.crc32(key.encode()) % partitions


# Values, but not frozen: see services.monitor.records (one entry and one result per arrival).
@dataclass(slots=True)
class JoinEntry:
    """Everything seen so far for one row id."""

    expires_at: float
    partition: int
    """Stream partition the id belongs to: expiry runs per partition."""
    predictions: tuple[Prediction, ...] = ()
    label: Label | None = None

    @property
    def unmatched_predictions(self) -> int:
        """Predictions that never got a label (counted when the entry expires)."""
        return 0 if self.label is not None else len(self.predictions)

    @property
    def unmatched_label(self) -> bool:
        """A label whose prediction never came (counted when the entry expires)."""
        return self.label is not None and not self.predictions


@dataclass(slots=True)
class JoinResult:
    entry: JoinEntry
    """The entry to store."""
    joined: tuple[LabelledSample, ...] = ()
    """Pairs completed by this arrival."""
    compared: tuple[tuple[LabelledSample, LabelledSample], ...] = ()
    """(live, shadow or canary) answers to one request, both labelled by this arrival."""
    duplicate: bool = False
    """The arrival was already known: nothing changed, nothing to count."""


def add_prediction(
    entry: JoinEntry | None, prediction: Prediction, *, deadline: float, partition: int
) -> JoinResult:
    """Record a prediction; it joins the label if that came first.

    >>> p = Prediction("e1", "m", 1, "production", False, "1", 0.0, 10.0)
    >>> first = add_prediction(None, p, deadline=99.0, partition=0)
    >>> first.joined, first.duplicate
    ((), False)
    >>> add_prediction(first.entry, p, deadline=99.0, partition=0).duplicate
    True
    """
    if entry is None:
        entry = JoinEntry(expires_at=deadline, partition=partition)
    if any(known.served_by == prediction.served_by for known in entry.predictions):
        return JoinResult(entry, duplicate=True)
    updated = JoinEntry(
        entry.expires_at, entry.partition, (*entry.predictions, prediction.without_features()), entry.label
    )
    if entry.label is None:
        return JoinResult(updated)
    sample = LabelledSample(prediction, entry.label)
    others = [LabelledSample(p, entry.label) for p in entry.predictions]
    return JoinResult(updated, (sample,), _comparisons([sample], others))


def add_label(entry: JoinEntry | None, label: Label, *, deadline: float, partition: int) -> JoinResult:
    """Record a label; it joins every prediction already there (production and shadow).

    >>> p = Prediction("e1", "m", 1, "production", False, "1", 0.0, 10.0)
    >>> entry = add_prediction(None, p, deadline=99.0, partition=0).entry
    >>> result = add_label(entry, Label("e1", "1", 1.0, None, 12.0), deadline=99.0, partition=0)
    >>> [s.error for s in result.joined]
    [0.0]
    """
    if entry is None:
        entry = JoinEntry(expires_at=deadline, partition=partition)
    if entry.label is not None:
        return JoinResult(entry, duplicate=True)
    joined = [LabelledSample(prediction, label) for prediction in entry.predictions]
    updated = JoinEntry(entry.expires_at, entry.partition, entry.predictions, label)
    return JoinResult(updated, tuple(joined), _comparisons(joined, joined))


def _comparisons(
    new: list[LabelledSample], known: list[LabelledSample]
) -> tuple[tuple[LabelledSample, LabelledSample], ...]:
    """Every (live, challenger) pair of one model among ``new`` x ``known``, once."""
    pairs = []
    for a in new:
        for b in known:
            if a is b or a.prediction.model != b.prediction.model:
                continue
            for live, challenger in ((a, b), (b, a)):
                if live.prediction.live and not challenger.prediction.live:
                    if (live, challenger) not in pairs:
                        pairs.append((live, challenger))
    return tuple(pairs)


class ExpiryQueue:
    """Row ids by deadline, per partition, so expiry costs only what expires.

    Deadlines never move, so an id popped here is expired unless it was deleted and seen
    again since (then its stored entry has a later deadline, which the caller checks).

    >>> queue = ExpiryQueue()
    >>> queue.add(0, 5.0, "a"); queue.add(0, 1.0, "b"); queue.add(1, 1.0, "c")
    >>> queue.pop_due(0, now=2.0), len(queue)
    (['b'], 2)
    """

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())

    def add(self, partition: int, deadline: float, key: str) -> None:
        heapq.heappush(self._heaps.setdefault(partition, []), (deadline, key))

    def pop_due(self, partition: int, now: float) -> list[str]:
        heap = self._heaps.get(partition)
        due: list[str] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[1])
        return due

    def forget(self, partition: int) -> None:
        """Drop a partition this process no longer owns."""
        self._heaps.pop(partition, None)
