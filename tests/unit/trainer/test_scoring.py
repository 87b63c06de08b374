"""Holdout scores: every metric's direction, and what happens at the edges."""

from __future__ import annotations

import math

import numpy as np

from services.trainer.scoring import METRICS, classification_scores, regression_scores

CLASSES = np.array(["a", "b"])


def test_gain_is_positive_when_better_whatever_the_direction() -> None:
    assert METRICS["accuracy"].gain(0.9, 0.8) > 0
    assert METRICS["log_loss"].gain(0.2, 0.3) > 0
    assert METRICS["log_loss"].gain(0.4, 0.3) < 0
    assert METRICS["mae"].rank_key(1.0) < METRICS["mae"].rank_key(2.0)
    assert METRICS["accuracy"].rank_key(math.nan) == math.inf


def test_classification_scores_on_a_clean_holdout() -> None:
    y = np.array(["a", "b", "b", "a"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    scores = classification_scores(y, CLASSES[proba.argmax(axis=1)], proba, CLASSES)
    assert scores["accuracy"] == 0.75
    assert scores["roc_auc"] == 1.0
    assert 0 < scores["log_loss"] < 1


def test_a_class_the_model_never_saw_costs_a_large_but_finite_log_loss() -> None:
    y = np.array(["a", "b", "c"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    scores = classification_scores(y, CLASSES[proba.argmax(axis=1)], proba, CLASSES)
    assert math.isfinite(scores["log_loss"]) and scores["log_loss"] > 10
    assert math.isnan(scores["roc_auc"])


def test_roc_auc_is_undefined_on_a_single_class_holdout() -> None:
    y = np.array(["a", "a"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.4, 0.6]])
    assert math.isnan(classification_scores(y, CLASSES[proba.argmax(axis=1)], proba, CLASSES)["roc_auc"])


def test_regression_scores() -> None:
    scores = regression_scores(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert scores["mae"] == 2 / 3
    assert scores["neg_rmse"] == -math.sqrt(4 / 3)
    assert scores["r2"] == 1 - 4 / 2
