"""The models a federation trains: parameters as arrays, local training, scoring.

A federated model is a scikit-learn classifier whose parameters average: a linear model
(``SGDClassifier`` with the log loss, i.e. logistic regression fitted by stochastic
gradient descent) or a multi-layer perceptron (``MLPClassifier``). What travels between
the sites and the server is only the list of parameter arrays, in the fixed order
:meth:`Architecture.shapes` gives; the server rebuilds the estimator from them and the
registry stores it with skops, so serving loads it like any other scikit-learn model.

FedProx (Li et al., 2020) adds ``mu/2 * ||w - w_global||^2`` to each site's objective.
scikit-learn's optimisers know nothing of it, so its gradient step, ``mu * (w - w_global)``,
is applied after each mini-batch step: the same first-order update, split in two.

No I/O and no Flower here: the site agent, the server and the demo all use this module.

Examples
--------
>>> import numpy as np
>>> arch = Architecture("logistic_regression", n_features=2, classes=("0", "1"))
>>> [a.shape for a in arch.initial(seed=1)]
[(1, 2), (1,)]
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)); y = np.where(X[:, 0] > 0, "1", "0")
>>> trained = train_locally(arch, arch.initial(seed=1), X, y, LocalTraining(epochs=3), seed=1)
>>> score(arch, trained, X, y).accuracy > 0.9
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Arrays = list[NDArray[np.float64]]
FAMILIES = ("logistic_regression", "mlp")


@dataclass(frozen=True)
class LocalTraining:
    """How a site trains its copy in one round."""

    epochs: int = 1
    learning_rate: float = 0.05
    l2: float = 1e-4
    batch_size: int = 32
    proximal_mu: float = 0.0
    """FedProx's proximal weight; 0 is plain FedAvg."""


@dataclass(frozen=True)
class Score:
    loss: float
    accuracy: float
    rows: int


@dataclass(frozen=True)
class Architecture:
    """What every site and the server agree on: family, input width, classes, layers."""

    family: str
    n_features: int
    classes: tuple[str, ...]
    hidden_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family: one of {', '.join(FAMILIES)}, not {self.family!r}")
        if self.n_features < 1 or len(self.classes) < 2:
            raise ValueError("a model needs at least one feature and two classes")

    @property
    def outputs(self) -> int:
        """Output units: one for two classes (scikit-learn's binary form), else one per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    def shapes(self) -> list[tuple[int, ...]]:
        """The parameter arrays' shapes, in the order they travel."""
        if self.family == "logistic_regression":
            return [(self.outputs, self.n_features), (self.outputs,)]
        sizes = [self.n_features, *self.hidden_layers, self.outputs]
        weights = [(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        return [*weights, *((b,) for b in sizes[1:])]

    def initial(self, seed: int) -> Arrays:
        """The first global model: zeros for a linear model, scikit-learn's own scaled
        random initialisation (seeded) for a perceptron, so that every site starts alike."""
        if self.family == "logistic_regression":
            return [np.zeros(shape) for shape in self.shapes()]
        return parameters_of(self.estimator(seed=seed))

    def estimator(
        self, parameters: Arrays | None = None, training: LocalTraining | None = None, seed: int = 0
    ) -> Any:
        """A fitted-looking estimator holding ``parameters``, ready to predict or to go on learning.

        scikit-learn builds an estimator's internal state on its first ``partial_fit``; one
        step on one all-zero row per class builds it, then every parameter is overwritten.
        """
        # Imported on use (a second or more): every Flower message starts a site process,
        # and most of them (secure aggregation's key exchange) train nothing.
        from sklearn.linear_model import SGDClassifier
        from sklearn.neural_network import MLPClassifier

        training = training or LocalTraining()
        estimator: Any
        if self.family == "logistic_regression":
            estimator = SGDClassifier(
                loss="log_loss",
                learning_rate="constant",
                eta0=training.learning_rate,
                alpha=training.l2,
                random_state=seed,
            )
        else:
            estimator = MLPClassifier(
                hidden_layer_sizes=self.hidden_layers,
                solver="sgd",
                learning_rate_init=training.learning_rate,
                momentum=0.0,
                nesterovs_momentum=False,
                alpha=training.l2,
                # One gradient step per mini-batch train_locally feeds it (up to 200 rows).
                batch_size="auto",
                random_state=seed,
            )
        labels = np.array(self.classes)
        estimator.partial_fit(np.zeros((len(labels), self.n_features)), labels, classes=labels)
        if parameters is None and self.family == "logistic_regression":
            parameters = [np.zeros(shape) for shape in self.shapes()]
        if parameters is not None:
            set_parameters(estimator, parameters)
        return estimator


def parameters_of(estimator: Any) -> Arrays:
    """The estimator's parameters, copied, in the order :meth:`Architecture.shapes` gives."""
    if hasattr(estimator, "coef_"):
        return [np.array(estimator.coef_, dtype=np.float64), np.array(estimator.intercept_, dtype=np.float64)]
    return [np.array(a, dtype=np.float64) for a in (*estimator.coefs_, *estimator.intercepts_)]


def set_parameters(estimator: Any, parameters: Arrays) -> None:
    arrays = [np.array(a, dtype=np.float64) for a in parameters]
    if hasattr(estimator, "coef_"):
        estimator.coef_, estimator.intercept_ = arrays
        return
    layers = len(estimator.coefs_)
    estimator.coefs_ = arrays[:layers]
    estimator.intercepts_ = arrays[layers:]


def train_locally(
    arch: Architecture,
    global_parameters: Arrays,
    X: NDArray[np.float64],
    y: NDArray[Any],
    training: LocalTraining,
    seed: int,
) -> Arrays:
    """``training.epochs`` passes of mini-batch SGD over ``(X, y)`` from the global model."""
    estimator = arch.estimator(global_parameters, training, seed)
    anchor = [np.array(a, dtype=np.float64) for a in global_parameters]
    rng = np.random.default_rng(seed)
    for _ in range(training.epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), training.batch_size):
            batch = order[start : start + training.batch_size]
            estimator.partial_fit(X[batch], y[batch])
            if training.proximal_mu > 0:
                step = training.learning_rate * training.proximal_mu
                current = parameters_of(estimator)
                set_parameters(estimator, [w - step * (w - g) for w, g in zip(current, anchor, strict=True)])
    return parameters_of(estimator)


def score(arch: Architecture, parameters: Arrays, X: NDArray[np.float64], y: NDArray[Any]) -> Score:
    """Log loss and accuracy of the model ``parameters`` describe, on ``(X, y)``."""
    from sklearn.metrics import log_loss

    estimator = arch.estimator(parameters)
    probabilities = estimator.predict_proba(X)
    labels = np.array(arch.classes)
    predicted = estimator.classes_[np.argmax(probabilities, axis=1)]
    return Score(
        loss=float(log_loss(y, probabilities, labels=labels)),
        accuracy=float(np.mean(predicted == y)),
        rows=len(y),
    )
