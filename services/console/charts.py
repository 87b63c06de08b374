"""What the charts draw, shaped for uPlot: aligned columns (``[xs, ys1, ys2, ...]``, seconds
on the x axis, ``None`` where a series has no value) plus the events drawn as markers on
the same time axis. No I/O; ``static/console.js`` draws and refreshes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

CLASSIFICATION = "classification"
RANGES = {"1h": (timedelta(hours=1), 12), "24h": (timedelta(hours=24), 24), "7d": (timedelta(days=7), 28)}
"""Time ranges a quality chart offers: span and number of buckets."""


def _live_task(status: Mapping[str, Any]) -> str:
    tasks = {v.get("task") for v in status.get("versions", [])}
    return CLASSIFICATION if CLASSIFICATION in tasks or not tasks else "regression"


def _drift_label(drift: Mapping[str, Any]) -> str:
    what = f"{drift['kind']} drift on v{drift['version']}"
    if drift.get("feature"):
        what += f" ({drift['feature']})"
    return f"{what}: {drift['statistic']:.3g} against {drift['reference_statistic']:.3g} before"


def quality_chart(status: Mapping[str, Any], timeline: Mapping[str, Any]) -> dict[str, Any]:
    """Each version's rolling accuracy (mean absolute error for regressors) over time, with
    drift events, retrain requests and live-version changes as markers.

    >>> timeline = {"versions": {"1": [{"at": 10.0, "accuracy": 0.9}, {"at": 15.0, "accuracy": 0.7}],
    ...                          "2": [{"at": 15.0, "accuracy": 0.95}]},
    ...             "drifts": [{"version": 1, "kind": "concept", "feature": "", "detected_at": 14.0,
    ...                         "statistic": 0.3, "reference_statistic": 0.1, "id": "d1"}],
    ...             "retrains": [], "live_changes": []}
    >>> chart = quality_chart({"versions": [{"task": "classification"}]}, timeline)
    >>> chart["data"]
    [[10.0, 15.0], [0.9, 0.7], [None, 0.95]]
    >>> [s["label"] for s in chart["series"]], chart["events"][0]["label"]
    (['v1 accuracy', 'v2 accuracy'], 'concept drift on v1: 0.3 against 0.1 before')
    """
    field, name = (
        ("accuracy", "accuracy")
        if _live_task(status) == CLASSIFICATION
        else ("mean_absolute_error", "mean absolute error")
    )
    versions = sorted(timeline.get("versions", {}).items(), key=lambda item: int(item[0]))
    xs = sorted({point["at"] for _, points in versions for point in points})
    index = {x: i for i, x in enumerate(xs)}
    columns: list[list[float | None]] = []
    for _, points in versions:
        column: list[float | None] = [None] * len(xs)
        for point in points:
            column[index[point["at"]]] = point.get(field)
        columns.append(column)
    events = [
        {"at": d["detected_at"], "kind": d["kind"], "label": _drift_label(d)}
        for d in timeline.get("drifts", [])
    ]
    events += [
        {
            "at": r["requested_at"],
            "kind": "retrain",
            "label": f"retrain requested from v{r['parent_version']}",
        }
        for r in timeline.get("retrains", [])
    ]
    events += [
        {"at": c["at"], "kind": "live", "label": f"v{c['version']} live"}
        for c in timeline.get("live_changes", [])
        if c.get("previous_version") is not None
    ]
    return {
        "y_label": name,
        "series": [{"label": f"v{number} {name}"} for number, _ in versions],
        "data": [xs, *columns],
        "events": sorted(events, key=lambda e: e["at"]),
    }


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime


def buckets(range_name: str, now: datetime) -> list[Bucket]:
    """Equal buckets covering the range up to ``now``, oldest first (``KeyError`` for an
    unknown range).

    >>> from datetime import UTC
    >>> [(b.start.hour, b.end.hour) for b in buckets("24h", datetime(2026, 1, 2, 12, tzinfo=UTC))][:2]
    [(12, 13), (13, 14)]
    """
    span, count = RANGES[range_name]
    step = span / count
    start = now - span
    return [Bucket(start + i * step, start + (i + 1) * step) for i in range(count)]


def refusals_table(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Refused events by reason and field, one count per bucket, most refused first.

    >>> refusals_table([{"issues": [{"error_class": "wrong_type", "field": "f0", "count": "2"}]},
    ...                 {"issues": [{"error_class": "wrong_type", "field": "f0", "count": "3"},
    ...                             {"error_class": "missing_field", "field": "f1", "count": "1"}]}])
    [{'reason': 'wrong_type', 'field': 'f0', 'counts': [2, 3], 'total': 5}, {'reason': 'missing_field', 'field': 'f1', 'counts': [0, 1], 'total': 1}]
    """
    rows: dict[tuple[str, str], list[int]] = {}
    for i, summary in enumerate(summaries):
        for issue in summary.get("issues", []):
            key = (str(issue.get("error_class", "")), str(issue.get("field", "")))
            rows.setdefault(key, [0] * len(summaries))[i] += int(issue.get("count", 0))
    table = [
        {"reason": reason, "field": field, "counts": counts, "total": sum(counts)}
        for (reason, field), counts in rows.items()
    ]
    return sorted(table, key=lambda row: (-row["total"], row["reason"], row["field"]))


def ingest_chart(bounds: Sequence[Bucket], summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accepted, duplicate and refused events per bucket (at each bucket's start)."""
    names = ("accepted", "duplicates", "rejected")
    return {
        "y_label": "events",
        "series": [{"label": name} for name in names],
        "data": [
            [b.start.timestamp() for b in bounds],
            *([int(s.get(name, 0)) for s in summaries] for name in names),
        ],
        "events": [],
    }
