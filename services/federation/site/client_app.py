"""The site agent's Flower ClientApp: trains and evaluates next to the site's data.

Flower's SuperNode runs this app for every instruction from the server. Reading the
site's CSV, training and scoring all happen here, in the site's own process; what goes
back is parameter arrays of the model's shape (masked, under secure aggregation), a
weight, a loss and an accuracy. The site holds its own line too:

- it refuses to send its update in the clear unless it was started with
  ``--allow-plain-updates``: without secure aggregation the server would see its model;
- under differential privacy Flower's ``fixedclipping_mod`` clips its update to the norm
  the server announced before secure aggregation masks it;
- it refuses an instruction whose spec is malformed, a global model that is not the
  spec's shape or not finite, and never sends a non-finite update of its own;
- a holdout site evaluates every model it is sent and trains none.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import Client, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import NDArrays, Scalar
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from services.federation import protocol
from services.federation.model import score, train_locally
from services.federation.site.data import SiteData, load
from services.federation.spec import FederationSpec
from services.federation.updates import check_update


class SiteClient(NumPyClient):
    """One site: its name and role, and where its rows are (from the SuperNode's node config)."""

    def __init__(self, node_config: dict[str, Any]):
        self.name = str(node_config.get(protocol.NODE_SITE, ""))
        self.data_path = Path(str(node_config.get(protocol.NODE_DATA, "")))
        self.role = str(node_config.get(protocol.NODE_ROLE, protocol.TRAIN_ROLE))

    def _data(self, spec: FederationSpec) -> SiteData:
        return load(self.data_path, spec.features, spec.target, spec.classes, spec.eval_fraction, spec.seed)

    def _seed(self, spec: FederationSpec, round_number: int) -> int:
        """Different for every site and round, the same when a round is repeated."""
        return (spec.seed * 100_003 + round_number * 7_919 + zlib.crc32(self.name.encode())) % 2**32

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        properties: dict[str, Scalar] = {
            protocol.PROPERTY_SITE: self.name,
            protocol.PROPERTY_ROLE: self.role,
            protocol.PROPERTY_TRAIN_ROWS: 0,
            protocol.PROPERTY_EVAL_ROWS: 0,
            protocol.PROPERTY_PROBLEM: "",
        }
        try:
            if not self.name:
                raise ValueError("the site agent was started without a site name")
            if self.role not in (protocol.TRAIN_ROLE, protocol.HOLDOUT_ROLE):
                raise ValueError(f"unknown role {self.role!r}")
            data = self._data(protocol.read_instruction(dict(config)).spec)
        except (ValueError, OSError) as exc:
            properties[protocol.PROPERTY_PROBLEM] = f"{type(exc).__name__}: {exc}"[:1000]
            return properties
        properties[protocol.PROPERTY_TRAIN_ROWS] = len(data.train)
        properties[protocol.PROPERTY_EVAL_ROWS] = len(data.evaluation)
        return properties

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        if self.role == protocol.HOLDOUT_ROLE:
            raise PermissionError(f"site {self.name!r} is a holdout site: it evaluates, it does not train")
        instruction = protocol.read_instruction(dict(config))
        spec = instruction.spec
        arch = protocol.architecture(spec)
        check_update(parameters, arch.shapes())
        data = self._data(spec)
        trained = train_locally(
            arch,
            parameters,
            data.train.X,
            data.train.y,
            protocol.local_training(spec),
            seed=self._seed(spec, instruction.round),
        )
        check_update(trained, arch.shapes())
        weight = len(data.train) if spec.weighting == "examples" else 1
        return trained, weight, {}

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        spec = protocol.read_instruction(dict(config)).spec
        arch = protocol.architecture(spec)
        check_update(parameters, arch.shapes())
        result = score(arch, parameters, *self._rows_to_score(spec))
        return result.loss, result.rows, {protocol.ACCURACY: result.accuracy}

    def _rows_to_score(self, spec: FederationSpec) -> tuple[Any, Any]:
        """A holdout site scores on all its rows; a training site on the rows it never trains on."""
        data = self._data(spec)
        if self.role == protocol.HOLDOUT_ROLE:
            return np.vstack([data.train.X, data.evaluation.X]), np.concatenate(
                [data.train.y, data.evaluation.y]
            )
        return data.evaluation.X, data.evaluation.y


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Take part in SecAgg+ when the server runs it; send an update in the clear only if
    the site allowed it."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    if bool(context.node_config.get(protocol.NODE_PLAIN, False)):
        return call_next(msg, context)
    raise PermissionError(
        "this site sends its update only under secure aggregation (start it with "
        "--allow-plain-updates to allow otherwise)"
    )


def clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's fixed clipping, when the server asks for differential privacy."""
    if msg.metadata.message_type == MessageType.TRAIN:
        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        if protocol.CLIPPING_NORM in fit_ins.config:
            return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def site_mods() -> list[Mod]:
    """Outermost first: secure aggregation masks what clipping left."""
    return [secure_aggregation_mod, clipping_mod]


def client_fn(context: Context) -> Client:
    return SiteClient(dict(context.node_config)).to_client()


app = ClientApp(client_fn=client_fn, mods=site_mods())
