"""The server's side of every exchange with the sites: deadlines, receipts, screening.

:class:`ServerGrid` wraps the Grid Flower hands the ServerApp, and every workflow
(Flower's default rounds, SecAgg+) talks to the sites through it, so three rules hold
for every message whatever the workflow:

- **a deadline**: an exchange waits at most the round timeout, then goes on without the
  silent sites (Flower's default workflow would wait for ever); it polls for replies
  every fraction of a second rather than Flower's fixed three;
- **a receipt**: the structure of every reply (records, array shapes and dtypes, config
  keys with value types, metric names; never a value) is written to ``receipts.jsonl``;
- **screening**: a training reply must be the model's parameter arrays (or, under secure
  aggregation, a masked vector of the model's shapes); an evaluation reply finite numbers
  in range. Anything else is turned into an error reply, so the workflow treats the
  site as dropped for the round (SecAgg+ then removes its masks with its neighbours'
  shares), and the reason is recorded against the site.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.error import Error
from flwr.app.message_type import MessageType
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

from services.federation.status import RunRecorder
from services.federation.updates import RefusedUpdate, check_masked, check_update

POLL_SECONDS = 0.25
REFUSED = ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class Screen:
    """What the server accepts from a site, for one model."""

    def __init__(self, shapes: list[tuple[int, ...]], modulus: int):
        self.shapes = shapes
        self.modulus = modulus

    def check(self, msg: Message) -> None:
        """Raise :class:`RefusedUpdate` unless ``msg`` is an acceptable reply."""
        if msg.has_error():
            return
        kind = msg.metadata.message_type
        if kind == MessageType.TRAIN:
            secure = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            if secure is not None:
                if Key.MASKED_PARAMETERS in secure:
                    check_masked(_masked_arrays(secure), self.shapes, self.modulus)
                if msg.content.array_records and any(len(r) for r in msg.content.array_records.values()):
                    raise RefusedUpdate("parameters sent in the clear beside a secure-aggregation reply")
                return
            fit = compat.recorddict_to_fitres(msg.content, keep_input=True)
            check_update(parameters_to_ndarrays(fit.parameters), self.shapes)
            if fit.num_examples < 0:
                raise RefusedUpdate(f"a negative weight ({fit.num_examples})")
        elif kind == MessageType.EVALUATE:
            result = compat.recorddict_to_evaluateres(msg.content)
            if not math.isfinite(result.loss) or result.num_examples < 0:
                raise RefusedUpdate("an evaluation with a non-finite loss or a negative row count")
            accuracy = result.metrics.get("accuracy")
            if not isinstance(accuracy, int | float) or not 0.0 <= float(accuracy) <= 1.0:
                raise RefusedUpdate(f"an accuracy of {accuracy!r}, not a number in [0, 1]")


def _masked_arrays(record: ConfigRecord) -> list[np.ndarray[Any, Any]]:
    values = record[Key.MASKED_PARAMETERS]
    if not isinstance(values, list):
        raise RefusedUpdate("the masked vector is not a list of serialized arrays")
    arrays = []
    for value in values:
        if not isinstance(value, bytes):
            raise RefusedUpdate("the masked vector is not a list of serialized arrays")
        try:
            arrays.append(bytes_to_ndarray(value))
        except Exception as exc:  # whatever np.load makes of hostile bytes
            raise RefusedUpdate(f"the masked vector does not deserialize: {type(exc).__name__}") from None
    return arrays


def describe(msg: Message) -> dict[str, Any]:
    """The structure of a reply, without a single value from it."""
    entry: dict[str, Any] = {"type": msg.metadata.message_type, "round": msg.metadata.group_id}
    if msg.has_error():
        entry["error"] = True
        return entry
    content: RecordDict = msg.content
    entry["arrays"] = {
        name: {key: _describe_value(array.data) for key, array in record.items()}
        for name, record in content.array_records.items()
    }
    entry["configs"] = {
        name: {key: _describe_value(value) for key, value in record.items()}
        for name, record in content.config_records.items()
    }
    entry["metrics"] = {name: sorted(record) for name, record in content.metric_records.items()}
    return entry


def _describe_value(value: Any) -> Any:
    """An array's shape and dtype as deserialized (not as a sender declared them), a byte
    string's length, a scalar's type."""
    if isinstance(value, bytes):
        try:
            array = bytes_to_ndarray(value)
        except Exception:
            return {"bytes": len(value)}
        return {"array": [list(array.shape), str(array.dtype)]}
    if isinstance(value, list):
        return [_describe_value(v) for v in value]
    return type(value).__name__


class ServerGrid(Grid):
    """The run's Grid with a deadline, a receipt and a screen on every exchange."""

    def __init__(
        self,
        grid: Grid,
        *,
        timeout: float,
        recorder: RunRecorder,
        screen: Screen,
        site_name: Callable[[int], str],
        on_refused: Callable[[int, str], None],
    ):
        self._grid = grid
        self.timeout = timeout
        self._recorder = recorder
        self._screen = screen
        self._site_name = site_name
        self._on_refused = on_refused

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies as they are (Flower's workflows only ever call :meth:`send_and_receive`,
        where they are recorded and screened)."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Replies that arrived within the deadline (``timeout``, at most the round timeout),
        each recorded, and refused ones replaced by an error reply."""
        deadline = time.monotonic() + min(timeout if timeout is not None else self.timeout, self.timeout)
        outgoing = list(messages)
        if not outgoing:
            return []
        ids = list(self.push_messages(outgoing))
        instructions = dict(zip(ids, outgoing, strict=True))
        waiting = set(ids)
        replies: list[Message] = []
        while waiting:
            arrived = list(self.pull_messages(waiting))
            waiting.difference_update(msg.metadata.reply_to_message_id for msg in arrived)
            for msg in arrived:
                instruction = instructions.get(msg.metadata.reply_to_message_id)
                if instruction is not None:  # a reply to nothing sent here is not taken
                    replies.append(self._receive(msg, instruction))
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        return replies

    def _receive(self, msg: Message, instruction: Message) -> Message:
        node = msg.metadata.src_node_id
        entry = {"site": self._site_name(node), **describe(msg)}
        try:
            self._screen.check(msg)
        except RefusedUpdate as exc:
            entry["refused"] = str(exc)
            self._recorder.receipt(entry)
            self._on_refused(node, str(exc))
            return Message(Error(REFUSED, f"refused by the server: {exc}"), reply_to=instruction)
        self._recorder.receipt(entry)
        return msg
