"""Models whose parameters average: their arrays, rebuilding them, training them locally."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from services.federation import model as model_module
from services.federation.model import Architecture, LocalTraining, parameters_of, score, train_locally


def test_doctests() -> None:
    assert doctest.testmod(model_module).failed == 0


@pytest.mark.parametrize(
    ("arch", "shapes"),
    [
        (Architecture("logistic_regression", 4, ("0", "1")), [(1, 4), (1,)]),
        (Architecture("logistic_regression", 4, ("a", "b", "c")), [(3, 4), (3,)]),
        (Architecture("mlp", 4, ("0", "1"), (8, 5)), [(4, 8), (8, 5), (5, 1), (8,), (5,), (1,)]),
        (Architecture("mlp", 4, ("a", "b", "c"), (8,)), [(4, 8), (8, 3), (8,), (3,)]),
    ],
)
def test_the_arrays_that_travel_have_the_architectures_shapes(
    arch: Architecture, shapes: list[tuple[int, ...]]
) -> None:
    assert arch.shapes() == shapes
    assert [a.shape for a in arch.initial(seed=3)] == shapes
    assert [a.shape for a in parameters_of(arch.estimator(arch.initial(seed=3)))] == shapes


def test_the_same_seed_gives_every_site_the_same_first_model() -> None:
    arch = Architecture("mlp", 3, ("0", "1"), (4,))
    first, again, other = arch.initial(seed=5), arch.initial(seed=5), arch.initial(seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_an_estimator_rebuilt_from_arrays_predicts_what_the_arrays_say() -> None:
    arch = Architecture("logistic_regression", 2, ("0", "1"))
    coef, intercept = np.array([[2.0, -1.0]]), np.array([0.5])
    rows = np.array([[1.0, 1.0], [-1.0, 3.0]])
    expected = 1 / (1 + np.exp(-(rows @ coef.T + intercept).ravel()))
    np.testing.assert_allclose(arch.estimator([coef, intercept]).predict_proba(rows)[:, 1], expected)


@pytest.mark.parametrize("family", ["logistic_regression", "mlp"])
def test_local_training_learns_from_a_sites_rows(family: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = np.where(X[:, 0] - X[:, 2] > 0, "1", "0")
    arch = Architecture(family, 3, ("0", "1"), (8,) if family == "mlp" else ())
    start = arch.initial(seed=1)
    trained = train_locally(arch, start, X, y, LocalTraining(epochs=5, learning_rate=0.1), seed=1)
    assert score(arch, trained, X, y).accuracy > score(arch, start, X, y).accuracy + 0.3


def test_fedprox_keeps_a_sites_model_near_the_global_one() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    y = np.where(X[:, 1] > 0, "1", "0")
    arch = Architecture("logistic_regression", 3, ("0", "1"))
    start = arch.initial(seed=0)

    def distance(mu: float) -> float:
        trained = train_locally(arch, start, X, y, LocalTraining(epochs=3, proximal_mu=mu), seed=2)
        return float(sum(np.sum((a - b) ** 2) for a, b in zip(trained, start, strict=True)))

    assert distance(5.0) < 0.5 * distance(0.0)


def test_score_counts_classes_a_site_never_saw() -> None:
    arch = Architecture("logistic_regression", 1, ("a", "b", "c"))
    params = [np.array([[1.0], [0.0], [-1.0]]), np.zeros(3)]
    result = score(arch, params, np.array([[2.0], [-2.0]]), np.array(["a", "c"]))
    assert result.accuracy == 1.0 and result.rows == 2
