"""Train requests as people write them: a spec in JSON or YAML, a window as "the last 7d",
and the ``TrainRequest`` the trainer reads from ``<prefix>.train.requests``.

Shared by the ways a person asks for a training job (``mlops models train`` and the
console), so both read specs and build requests the same way.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import yaml
from google.protobuf import json_format

from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, ModelSpec, Task

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TASKS = {name.removeprefix("TASK_").lower(): name for name in Task.keys() if name != "TASK_UNSPECIFIED"}


def parse_spec(text: str, *, yaml_format: bool) -> ModelSpec:
    """A ``ModelSpec`` from its JSON form (or YAML), where ``task`` may also be written
    short (``classification``). Raises ``ValueError`` saying what is wrong.

    >>> parse_spec('{"model_name": "churn", "task": "classification"}', yaml_format=False).task
    1
    >>> parse_spec("model_name: churn\\nfeatures: [f0, f1]", yaml_format=True).features
    ['f0', 'f1']
    >>> parse_spec("[1, 2]", yaml_format=True)
    Traceback (most recent call last):
    ...
    ValueError: expected a ModelSpec object
    """
    try:
        document = yaml.safe_load(text) if yaml_format else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(document, dict):
        raise ValueError("expected a ModelSpec object")
    task = document.get("task")
    if isinstance(task, str):
        document["task"] = _TASKS.get(task.lower(), task)
    try:
        return json_format.ParseDict(document, ModelSpec())
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` as a positive duration; ``ValueError`` otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    amount = float(match.group(1)) if match else 0.0
    if match is None or amount <= 0:
        raise ValueError(f"expected a positive duration such as 30m, 12h or 7d, got {text!r}")
    try:
        return timedelta(**{_UNITS[match.group(2)]: amount})
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any calendar goes back") from None


def train_request(
    model_name: str,
    *,
    spec: ModelSpec | None = None,
    window: DataWindow | None = None,
    request_id: str = "",
    idempotency_key: str = "",
    trigger: TrainTrigger.ValueType = TrainTrigger.TRAIN_TRIGGER_MANUAL,
    requested_by: str = "",
) -> TrainRequest:
    """The request the trainer reads: without ``spec`` it takes the model's newest stored spec or
    its production version's; ``window`` replaces the spec's window whole."""
    request = TrainRequest(
        request_id=request_id or uuid.uuid4().hex,
        idempotency_key=idempotency_key,
        model_name=model_name,
        trigger=trigger,
        requested_by=requested_by,
    )
    if spec is not None:
        request.spec.CopyFrom(spec)
    if window is not None:
        request.window.CopyFrom(window)
    request.requested_at.GetCurrentTime()
    return request
