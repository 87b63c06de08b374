"""How a registered version records its hyperparameter search's trials: JSON lists in its
``params`` under ``search.trials.000``, ``.001`` ..., read back in key order. The trainer
writes them; the console and the tests read them.

>>> recorded_trials({"search.trials.001": '[{"score": 2}]', "search.trials.000": '[{"score": 1}]'})
[{'score': 1}, {'score': 2}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRIALS_PREFIX = "search.trials."


def trials_key(index: int) -> str:
    """The params key of the ``index``-th list of trials (``search.trials.000`` first)."""
    return f"{TRIALS_PREFIX}{index:03d}"


def recorded_trials(params: Mapping[str, str]) -> list[dict[str, Any]]:
    """The search trials ``params`` record, in the order they ran: empty if none, or if the
    record is not readable (params come from whoever registered the version)."""
    found: list[dict[str, Any]] = []
    for key in sorted(k for k in params if k.startswith(TRIALS_PREFIX)):
        try:
            part = json.loads(params[key])
        except ValueError:
            return []
        if not isinstance(part, list):
            return []
        found += [t for t in part if isinstance(t, dict)]
    return found
