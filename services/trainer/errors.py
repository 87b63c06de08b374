"""Why a training job ends without a promotable candidate, in words a person can act on.

Every failure carries a short machine-readable ``reason`` (a metric label and the
prefix of the TrainResult error) and a message that names the field or the numbers
involved. None of them leaves a version behind: the trainer registers only after the
whole job has succeeded.
"""

from __future__ import annotations


class TrainingFailed(Exception):
    """A job that cannot produce a candidate. ``reason`` is stable; the message is for people."""

    reason = "training_failed"

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field

    def describe(self) -> str:
        """``<reason>: <message>`` with the offending field named when there is one."""
        where = f" (field {self.field})" if self.field else ""
        return f"{self.reason}: {self}{where}"


class SpecError(TrainingFailed):
    """The model spec is unusable: unknown fields, bad parameters, impossible thresholds."""

    reason = "invalid_spec"


class DataError(TrainingFailed):
    """The window's rows cannot train this spec: empty, one class, too small, wrong types."""

    reason = "invalid_data"


class ConvergenceFailure(TrainingFailed):
    """The chosen estimator stopped before it converged."""

    reason = "did_not_converge"


class BudgetExceeded(TrainingFailed):
    """The job ran past the spec's time budget."""

    reason = "time_budget_exceeded"
