"""What a federation trains and how: the spec ``mlops federation start --spec`` reads.

A federation spec names the model (as the registry knows it), the features and classes
every site must provide, the model family, the strategy (FedAvg or FedProx, rounds,
minimum sites), secure aggregation and differential privacy, and the gates the global
model must pass before the registry promotes it. Everything is checked when the spec is
read; an error names the field. No I/O here beyond parsing text.

Examples
--------
>>> spec = FederationSpec.from_yaml('''
... model_name: clinics
... features: [age, pressure]
... target: outcome
... classes: ["0", "1"]
... strategy: {name: fedprox, proximal_mu: 0.1, rounds: 3, min_sites: 2}
... ''')
>>> spec.strategy.name, spec.model.family, spec.privacy.enabled
('fedprox', 'logistic_regression', True)
>>> FederationSpec.from_yaml("model_name: x\\nfeatures: []\\ntarget: y\\nclasses: [a, b]")
Traceback (most recent call last):
...
services.federation.spec.SpecError: features: Tuple should have at least 1 item after validation, not 0
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SpecError(ValueError):
    """A spec that cannot run; the message starts with the field at fault."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPart(_Part):
    """The model every site trains a copy of; its parameters are what travels."""

    family: Literal["logistic_regression", "mlp"] = "logistic_regression"
    """``logistic_regression`` (scikit-learn's SGDClassifier with the log loss) or ``mlp``
    (MLPClassifier): models whose parameters average."""

    hidden_layers: tuple[int, ...] = Field((16,), min_length=1, max_length=4)
    """Units per hidden layer of the ``mlp`` family."""

    learning_rate: float = Field(0.05, gt=0, le=1)
    """Constant step size of the sites' stochastic gradient descent."""

    l2: float = Field(1e-4, ge=0, le=1)
    """L2 penalty of the local objective."""

    batch_size: int = Field(32, ge=1, le=65536)
    """Rows per local gradient step."""

    local_epochs: int = Field(1, ge=1, le=100)
    """Passes over its training rows each site makes per round."""

    @model_validator(mode="after")
    def _hidden_sizes(self) -> ModelPart:
        if any(units < 1 or units > 4096 for units in self.hidden_layers):
            raise ValueError("hidden_layers: every layer needs 1 to 4096 units")
        return self


class StrategyPart(_Part):
    """How rounds run and how the sites' models are combined."""

    name: Literal["fedavg", "fedprox"] = "fedavg"
    """``fedavg`` (McMahan et al.) or ``fedprox`` (Li et al.: a proximal term keeps each
    site's model near the global one, which helps when sites' data differ)."""

    proximal_mu: float = Field(0.1, ge=0, le=100)
    """Weight of FedProx's proximal term; ignored by FedAvg."""

    rounds: int = Field(5, ge=1, le=1000)
    """Rounds of local training and aggregation."""

    min_sites: int = Field(2, ge=2, le=10000)
    """Sites a round needs: a round starts once this many are connected, and its update is
    applied only if at least this many valid updates arrived (the others dropped or were
    refused). Secure aggregation needs two at the very least."""

    round_timeout_seconds: float = Field(120.0, gt=0, le=86400)
    """How long each exchange of a round waits for sites before going on without the silent ones."""

    connect_timeout_seconds: float = Field(300.0, gt=0, le=86400)
    """How long the run waits for sites to connect: it starts as soon as ``expected_sites``
    are there, or at the deadline with at least ``min_sites``, and gives up with fewer."""

    expected_sites: int = Field(0, ge=0, le=10000)
    """Sites the run waits for before its first query (0: ``min_sites``)."""

    weighting: Literal["examples", "uniform"] = "examples"
    """How sites' models are averaged: by their training rows, or equally. Differential
    privacy always averages equally (a site's influence must be bounded)."""


class SecureAggregationPart(_Part):
    """Flower's SecAgg+: the server learns only the sum of the sites' masked updates."""

    enabled: bool = True
    num_shares: int | float = 1.0
    """Shares each site's secret is split into: a count > 2, or a fraction of the sampled sites."""

    reconstruction_threshold: int | float = 0.67
    """Shares needed to remove a dropped site's masks: a count, or a fraction of ``num_shares``."""

    clipping_range: float = Field(8.0, gt=0, le=1e6)
    """Parameters are clipped to [-range, range] and quantized before masking; it must hold
    every parameter of the model (a wider range costs precision)."""

    quantization_range: int = Field(2**22, ge=2**8, le=2**30)
    """Integer levels the clipping range is quantized to."""

    max_weight: float = Field(100_000.0, gt=0)
    """Largest training-row count a site may weigh in with when sites are averaged by their
    rows (more would overflow the masked sum); equal weights need none."""


class PrivacyPart(_Part):
    """Differential privacy of the released model, at the level of whole sites."""

    enabled: bool = True
    clipping_norm: float = Field(1.0, gt=0, le=1e6)
    """L2 bound on each site's update (its model minus the global one), applied at the site."""

    noise_multiplier: float = Field(0.5, ge=0, le=100)
    """Gaussian noise on the aggregate, as a multiple of ``clipping_norm`` on the sum of updates."""

    delta: float = Field(1e-5, gt=0, lt=1)
    """The delta of (epsilon, delta)-differential privacy."""

    max_epsilon: float = Field(50.0, gt=0)
    """The run refuses to start when its rounds would spend more than this epsilon."""

    @model_validator(mode="after")
    def _noise_when_enabled(self) -> PrivacyPart:
        if self.enabled and self.noise_multiplier <= 0:
            raise ValueError("noise_multiplier: must be > 0 when privacy is enabled")
        return self


class GatesPart(_Part):
    """What the global model must show, on the sites' own evaluation rows, to be promotable."""

    min_metric: float = Field(0.0, ge=0, le=1)
    """Floor on the global model's accuracy over the sites' evaluation rows (0: not checked)."""

    max_regression: float = Field(0.02, ge=0, le=1)
    """How much below the production version (scored by the same sites in the same round)
    the global model may be; only checked when a production version exists."""


class FederationSpec(_Part):
    """One federated model: what every site trains and how the federation runs."""

    model_name: str = Field(pattern=NAME_PATTERN)
    """The registry's model name; the global model is registered as its next version."""

    dataset: str = Field("", pattern=r"^$|" + NAME_PATTERN)
    """A name for the sites' data in lineage (no rows are read centrally). Empty: ``<model>-sites``."""

    features: tuple[str, ...] = Field(min_length=1, max_length=1000)
    """Columns every site must have, in the model's input order (numbers)."""

    target: str = Field(min_length=1, max_length=256)
    """The label column at every site."""

    classes: tuple[str, ...] = Field(min_length=2, max_length=1000)
    """Every class the model predicts, as text, including classes some sites never see."""

    eval_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each site's rows it keeps for evaluating, never for training."""

    seed: int = Field(7, ge=0, le=2**31 - 1)
    """Seeds the initial model, the sites' shuffling and their evaluation split."""

    model: ModelPart = ModelPart()
    strategy: StrategyPart = StrategyPart()
    secure_aggregation: SecureAggregationPart = SecureAggregationPart()
    privacy: PrivacyPart = PrivacyPart()
    gates: GatesPart = GatesPart()

    @model_validator(mode="after")
    def _distinct(self) -> FederationSpec:
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a feature is named twice")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: a class is named twice")
        if self.target in self.features:
            raise ValueError("target: the label cannot also be a feature")
        return self

    @property
    def dataset_name(self) -> str:
        return self.dataset or f"{self.model_name}-sites"[:128]

    @property
    def weighting(self) -> str:
        """How sites are averaged: equally under differential privacy, else as configured."""
        return "uniform" if self.privacy.enabled else self.strategy.weighting

    @classmethod
    def from_yaml(cls, text: str) -> FederationSpec:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"spec: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise SpecError("spec: must be a mapping of fields")
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> FederationSpec:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            named, sep, rest = message.partition(": ")
            if sep and named.isidentifier():  # a validator naming the field it refused
                where, message = ".".join(filter(None, (where, named))), rest
            raise SpecError(f"{where}: {message}", field=where) from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)
