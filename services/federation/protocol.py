"""What the server and the sites say to each other, besides parameter arrays.

Every instruction the server sends carries the federation spec as JSON under ``spec``; a
site parses it with the same rules as ``mlops federation start`` (so a malformed or
hostile instruction is refused with the field named) and reads its rows accordingly.
Training instructions add the round; under differential privacy Flower's clipping mod
finds the clipping norm under its own key. A site answers the first query with what it
is (no row ever travels): its name, role, how many rows it will train and evaluate on,
and any problem its data has with the spec. No I/O, no Flower.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.federation.model import Architecture, LocalTraining
from services.federation.spec import FederationSpec

SPEC = "spec"
ROUND = "round"
CLIPPING_NORM = "clipping_norm"
"""Flower's key (flwr.common.constant.KEY_CLIPPING_NORM) for ``fixedclipping_mod``."""

# Node configuration of a site agent (``flower-supernode --node-config``).
NODE_SITE = "site"
NODE_DATA = "data-path"
NODE_ROLE = "role"
NODE_PLAIN = "allow-plain-updates"

TRAIN_ROLE, HOLDOUT_ROLE = "train", "holdout"

# A site's answer to the server's first query.
PROPERTY_SITE = "site"
PROPERTY_ROLE = "role"
PROPERTY_TRAIN_ROWS = "train_rows"
PROPERTY_EVAL_ROWS = "eval_rows"
PROPERTY_PROBLEM = "problem"

ACCURACY = "accuracy"


def architecture(spec: FederationSpec) -> Architecture:
    hidden = spec.model.hidden_layers if spec.model.family == "mlp" else ()
    return Architecture(spec.model.family, len(spec.features), tuple(spec.classes), hidden)


def local_training(spec: FederationSpec) -> LocalTraining:
    return LocalTraining(
        epochs=spec.model.local_epochs,
        learning_rate=spec.model.learning_rate,
        l2=spec.model.l2,
        batch_size=spec.model.batch_size,
        proximal_mu=spec.strategy.proximal_mu if spec.strategy.name == "fedprox" else 0.0,
    )


def instruction(spec: FederationSpec, round_number: int = 0) -> dict[str, Any]:
    """The configuration of an instruction to the sites."""
    config: dict[str, Any] = {SPEC: spec.to_json(), ROUND: round_number}
    if spec.privacy.enabled and round_number > 0:
        config[CLIPPING_NORM] = float(spec.privacy.clipping_norm)
    return config


@dataclass(frozen=True)
class Instruction:
    spec: FederationSpec
    round: int


def read_instruction(config: dict[str, Any]) -> Instruction:
    """An instruction as a site receives it, checked (raises ``SpecError`` or ``ValueError``)."""
    text = config.get(SPEC)
    if not isinstance(text, str):
        raise ValueError(f"the instruction carries no {SPEC!r}")
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError(f"the instruction's {SPEC!r} is not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the instruction's {SPEC!r} is not an object")
    round_number = config.get(ROUND, 0)
    if not isinstance(round_number, int) or round_number < 0:
        raise ValueError(f"the instruction's {ROUND!r} is not a round number")
    return Instruction(FederationSpec.parse(raw), round_number)
