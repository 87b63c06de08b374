"""What a federation run leaves in its directory, for operators and for the service.

``status.json``
    The run as it goes: its state, the sites (names, roles, what they reported), one entry
    per round (who was asked, who answered, who was refused and why, the noise added, the
    budget spent so far) and, once finished, the outcome. Rewritten atomically after every
    change, so a reader never sees half a file. ``mlops federation status`` prints it.
``receipts.jsonl``
    One line per message the server received from a site: the site, the message type, the
    round, and the *structure* of what arrived (record names, array shapes and dtypes,
    configuration keys with value types and sizes, metric names), never a value. It is the
    evidence that sites sent parameter arrays, not rows.
``spec.json``, ``initial.npz``, ``parent.json``
    What the service gives the run: the spec, and the production version's parameters and
    number when the run starts from one.
``result.npz``
    The final global model's parameter arrays, for the service to register.

No Flower here: the platform's CLI reads these files too.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

STATUS_FILE = "status.json"
RECEIPTS_FILE = "receipts.jsonl"
SPEC_FILE = "spec.json"
INITIAL_FILE = "initial.npz"
PARENT_FILE = "parent.json"
RESULT_FILE = "result.npz"

WAITING, RUNNING, FINISHED, FAILED = "waiting_for_sites", "running", "finished", "failed"


@dataclass
class Site:
    """One connected site, as it described itself."""

    name: str
    role: str = "train"
    """``train``, or ``holdout``: evaluates every global model, never trains one."""
    train_rows: int = 0
    eval_rows: int = 0
    refused: str = ""
    """Why the run does not use this site at all (empty: it does)."""


@dataclass
class Round:
    number: int
    asked: list[str] = field(default_factory=list)
    """Sites sent training instructions."""
    aggregated: list[str] = field(default_factory=list)
    """Sites whose updates went into the new global model (all of them under secure
    aggregation, where the server only learns the sum)."""
    dropped: list[str] = field(default_factory=list)
    """Sites that did not answer in time, or answered with an error."""
    refused: dict[str, str] = field(default_factory=dict)
    """Site -> why its update was refused."""
    applied: bool = False
    """Whether the round changed the global model (it needs ``min_sites`` valid updates)."""
    noise_std: float = 0.0
    epsilon: float = 0.0
    """Privacy budget spent by the run up to and including this round."""
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class RunStatus:
    """Everything ``status.json`` holds."""

    model_name: str
    state: str = WAITING
    strategy: str = ""
    secure_aggregation: bool = False
    rounds_planned: int = 0
    sites: dict[str, Site] = field(default_factory=dict)
    """Node id (as text) -> site."""
    rounds: list[Round] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    """The final evaluation: per-site accuracy, the parent's, the aggregate."""
    epsilon: float = 0.0
    delta: float = 0.0
    error: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0

    def site_names(self, node_ids: list[int] | None = None) -> list[str]:
        """Names of the given nodes (all usable ones by default), sorted."""
        chosen = self.sites if node_ids is None else {str(n): self.sites[str(n)] for n in node_ids}
        return sorted(site.name for site in chosen.values() if not site.refused)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        values = dict(data)
        values["sites"] = {k: Site(**v) for k, v in data.get("sites", {}).items()}
        values["rounds"] = [Round(**r) for r in data.get("rounds", [])]
        return cls(**values)


class RunRecorder:
    """Keeps ``status.json`` and ``receipts.jsonl`` of one run in ``directory``, thread-safe."""

    def __init__(self, directory: Path, status: RunStatus):
        self.directory = directory
        self.status = status
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        with self._lock:
            write_json_atomically(self.directory / STATUS_FILE, self.status.to_dict())

    def receipt(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"at": round(time.time(), 3), **entry}, sort_keys=True)
        with self._lock, (self.directory / RECEIPTS_FILE).open("a") as file:
            file.write(line + "\n")


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(directory: Path) -> RunStatus | None:
    """The run's status, or None when ``directory`` holds none yet."""
    path = directory / STATUS_FILE
    if not path.exists():
        return None
    return RunStatus.from_dict(json.loads(path.read_text()))


def read_receipts(directory: Path) -> list[dict[str, Any]]:
    path = directory / RECEIPTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class RunInputs:
    """What a run starts from."""

    spec_json: str
    initial: list[NDArray[np.float64]] | None = None
    """The production version's parameters, when the run starts from them."""
    parent_version: int = 0

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SPEC_FILE).write_text(self.spec_json)
        if self.initial is not None:
            write_arrays(directory / INITIAL_FILE, self.initial)
        write_json_atomically(directory / PARENT_FILE, {"version": self.parent_version})

    @classmethod
    def read(cls, directory: Path) -> RunInputs:
        initial = directory / INITIAL_FILE
        parent = json.loads((directory / PARENT_FILE).read_text())
        return cls(
            spec_json=(directory / SPEC_FILE).read_text(),
            initial=read_arrays(initial) if initial.exists() else None,
            parent_version=int(parent["version"]),
        )


def write_arrays(path: Path, arrays: list[NDArray[np.float64]]) -> None:
    """Parameter arrays in order, as a NumPy archive (no pickles)."""
    with path.open("wb") as file:
        np.savez(file, *arrays)


def read_arrays(path: Path) -> list[NDArray[np.float64]]:
    with np.load(path, allow_pickle=False) as archive:
        return [np.array(archive[f"arr_{i}"], dtype=np.float64) for i in range(len(archive.files))]
