"""The trainer's settings, from ``TRAINER_*`` (and the platform's ``MLOPS_*``) variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.trainer.plan import Limits


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAINER_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Address the HTTP server (health and metrics) listens on."""

    http_port: int = Field(8083, ge=0, le=65535)
    """Port of the health and ``/metrics`` routes; 0 picks a free one."""

    consumer_group: str = Field("trainer", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """Consumer group on ``<prefix>.train.requests``, prefixed with the topic prefix
    (``mlops.trainer``); every trainer in the group shares the partitions."""

    default_time_budget_seconds: float = Field(120.0, gt=0)
    """Time budget of a job whose spec does not set one."""

    max_time_budget_seconds: float = Field(240.0, gt=0, le=280)
    """Largest budget a spec may ask for. Kept under the consumer's 300 s poll interval,
    past which the broker would hand the job's partition to another trainer."""

    min_holdout_rows: int = Field(20, ge=1)
    """Fewest holdout rows a gate may judge on; smaller windows fail the job."""

    min_train_rows: int = Field(20, ge=2)
    """Fewest rows a model may be trained on."""

    job_lease_seconds: float = Field(30.0, ge=2)
    """How long a job and its model stay claimed without a heartbeat. A trainer that dies
    mid-job leaves its claim for this long; then another trainer takes the job over."""

    progress_interval_seconds: float = Field(1.0, ge=0)
    """Least time between two PROGRESS results of one job."""

    online_learning: bool = True
    """Let production river models keep learning from ``<prefix>.features`` (needs
    ``MLOPS_ARTIFACT_SIGNING_KEY``, without which river models are not trained at all)."""

    online_snapshot_rows: int = Field(1000, ge=1)
    """Rows an online model learns before it is registered as a new version."""

    online_refresh_seconds: float = Field(10.0, gt=0)
    """How often online learning looks for new or changed river models in production."""

    serving_address: str = "127.0.0.1:8001"
    """gRPC address of serving, which computes the scores of batch scoring jobs."""

    batch_chunk_rows: int = Field(256, ge=1, le=4096)
    """Rows per ModelInfer call of a batch scoring job (at most serving's ``SERVING_MAX_ROWS``)."""

    @property
    def limits(self) -> Limits:
        return Limits(
            default_time_budget_seconds=min(self.default_time_budget_seconds, self.max_time_budget_seconds),
            max_time_budget_seconds=self.max_time_budget_seconds,
            min_holdout_rows=self.min_holdout_rows,
            min_train_rows=self.min_train_rows,
        )
