"""What a version's data drift is measured against: a sample of its training data, or,
when there is none to be had, the version's own earlier traffic.

The monitor asks the registry for each version's reference profile once, when it first
sees the version (or sees it go live). The answer is one of:

- ``training``: the profile's samples seed each feature's detector before any live value,
  so a shift between training and serving is found even if it happened before the
  version went live;
- ``none``: the version was registered without a profile (an older trainer, a model
  registered by hand): detectors compare each feature with its earlier live values;
- ``unavailable``: the registry could not be asked or did not answer; the same fallback,
  and the monitor asks again later;
- ``off``: the operator turned training references off (``MONITOR_TRAINING_REFERENCE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TRAINING = "training"
NONE = "none"
UNAVAILABLE = "unavailable"
OFF = "off"
PENDING = "pending"


@dataclass(frozen=True)
class ReferenceLookup:
    """The outcome of asking for a version's training reference.

    >>> ReferenceLookup(TRAINING, at=5.0, samples={"f0": (0.1, 0.2)}, rows=100).snapshot()
    {'status': 'training', 'detail': '', 'features': 1, 'rows': 100}
    """

    status: str
    at: float
    """When it was asked (epoch seconds): an ``unavailable`` answer is retried after a while."""
    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Per numeric feature, training values to feed its detector before live ones."""
    rows: int = 0
    """Training rows the profile summarises."""
    detail: str = ""
    """Why there is no training reference, for people."""

    @property
    def seeded(self) -> bool:
        return self.status == TRAINING

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "detail": self.detail,
            "features": len(self.samples),
            "rows": self.rows,
        }
