"""Settings of the monitor service (``MONITOR_*``, plus the platform's ``MLOPS_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.monitor.alerts import check_url_syntax
from services.monitor.detectors import DetectorSpec
from services.monitor.policy import MonitorPolicy

OFF = "off"
DATA_ADWIN_DELTA = 0.0002


class MonitorSettings(ServiceSettings):
    """Everything the monitor reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface the HTTP server (health, metrics, status) listens on."""

    http_port: int = Field(8082, ge=0, le=65535)
    """HTTP port; 0 picks a free one (tests)."""

    group_id: str = Field("", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    """Consumer group (and stream application id) shared by every monitor process of one
    platform. Empty: ``<topic prefix>-monitor``. Processes in one group split the work."""

    partitions: int = Field(4, ge=1, le=256)
    """Partitions of the monitor's own topics (the join and sample streams); fixed once created.
    It bounds how many monitor processes can share the work."""

    join_window_seconds: float = Field(3600.0, gt=0)
    """How long a prediction waits for its label (and a label for its prediction) before
    it expires unmatched and is counted as such; also how long duplicates are recognised."""

    sweep_interval_seconds: float = Field(5.0, gt=0)
    """How often expired join entries are swept, even on partitions with no traffic."""

    concept_detector: str = "ADWIN"
    """river detector on each version's error stream: ADWIN, PageHinkley, KSWIN, or (for
    classifiers) the binary DDM, EDDM, FHDDM, HDDMA, HDDMW."""

    concept_detector_params: dict[str, float | int | str] = Field(default_factory=dict)
    """Parameters of that detector, as JSON (``{"delta": 0.002}``); river's defaults otherwise."""

    data_detector: str = "ADWIN"
    """river detector on each input feature's values (data drift); ``off`` turns it off.
    KSWIN runs about a thousand times slower than ADWIN: give it a sample (``data_sample_every``)."""

    data_detector_params: dict[str, float | int | str] | None = None
    """Parameters of the data drift detector, as JSON. Unset: river's defaults, except that
    ADWIN gets ``delta`` 0.0002 instead of 0.002: every feature is a stream of its own, and at
    river's default twenty features of stationary data raised about one false alarm per
    million values (none at 0.0002, for about 30 samples more delay on a 0.5 sd shift)."""

    data_sample_every: int = Field(1, ge=1, le=1_000_000)
    """Feed the data drift detectors every n-th prediction of a version."""

    prediction_detector: str = "ADWIN"
    """river detector on the answers (each class's share, or a regressor's value); ``off`` turns it off."""

    prediction_detector_params: dict[str, float | int | str] = Field(default_factory=dict)
    """Parameters of the prediction drift detector, as JSON."""

    training_reference: bool = True
    """Measure data drift against each version's training data: the monitor reads the
    version's reference profile from the registry (``MLOPS_REGISTRY_ADDRESS``, read scope)
    and feeds its sample to each feature's detector before live values. Without one (the
    version has none, the registry is unreachable, or this is false) each feature is
    compared with its own earlier live values, and the status says so."""

    reference_timeout_seconds: float = Field(5.0, gt=0, le=60)
    """Longest the monitor waits for the registry's answer on a version's reference profile;
    detection of that process's models waits meanwhile, once per version."""

    reference_retry_seconds: float = Field(60.0, gt=0)
    """After the registry could not be asked, how long to wait before asking again (no call
    is made meanwhile, for any version)."""

    max_watched_features: int = Field(100, ge=1, le=10_000)
    """Input features (and output classes) watched per version at most."""

    retrain_on_data_drift: bool = False
    """Also ask for a retrain when an input feature of the live version drifts; concept
    drift (a higher error rate) always does."""

    accuracy_window: int = Field(1000, ge=10, le=1_000_000)
    """Labelled samples the rolling accuracy (or mean absolute error) is computed over."""

    history: int = Field(10_000, ge=100, le=1_000_000)
    """Recent samples kept per detector to locate a change's onset in event time."""

    timeline_interval_seconds: float = Field(5.0, ge=0.1, le=3600)
    """How often each watched version's accuracy and counts are added to its timeline
    (``/v1/timeline/{model}``, which the console charts)."""

    timeline_points: int = Field(720, ge=1, le=100_000)
    """Points kept per version in the timeline (at the default interval: the last hour)."""

    timeline_events: int = Field(200, ge=1, le=100_000)
    """Drift events, retrain requests and live-version changes kept per model in the timeline."""

    cooldown_seconds: float = Field(600.0, ge=0)
    """Least time between two retrain requests for one model: a flapping detector causes
    one retrain, not a storm."""

    retrain_min_samples: int = Field(500, ge=1)
    """Labelled samples that must have arrived since a drift's onset before retraining on them
    (doubled for each further attempt of one drift episode)."""
    retrain_max_attempts: int = Field(3, ge=1, le=10)
    """Retrain requests per drift episode at most: when a retrain puts no new version live
    within the cooldown (its candidate failed the gates), the monitor asks again on more data."""

    batch_size: int = Field(500, ge=1, le=10_000)
    """Most records handled as one batch between the monitor's stages."""

    batch_seconds: float = Field(0.01, gt=0, le=5)
    """Longest a record waits for its batch to fill: the delay each stage may add."""

    alert_webhook_url: SecretStr | None = None
    """Where to POST a JSON alert on every drift event and retrain request; unset: no alerts.
    Secret because such URLs often carry a token. The host must resolve to public addresses only."""

    alert_webhook_schemes: list[str] = Field(default_factory=lambda: ["https"])
    """URL schemes the webhook may use (add ``http`` knowingly: alerts then travel in clear)."""

    alert_webhook_allow_private: bool = False
    """Allow a webhook on a loopback, private or link-local address (development only)."""

    commit_interval_seconds: float = Field(1.0, gt=0)
    """How often consumed offsets are committed (after their effects are flushed)."""

    fetch_max_wait_ms: int = Field(20, ge=1, le=5000)
    """How long the broker may hold the route stage's fetch when there is nothing new; low keeps detection prompt."""

    rebalance_timeout_seconds: float = Field(10.0, gt=0)
    """Group rebalance timeout; the embedded broker holds every join for about half of it."""

    session_timeout_seconds: float = Field(10.0, gt=0)
    """A monitor process silent this long leaves the group and its partitions move."""

    @model_validator(mode="after")
    def _checked(self) -> MonitorSettings:
        self.policy()
        if self.alert_webhook_url is not None:
            check_url_syntax(self.alert_webhook_url.get_secret_value(), self.alert_webhook_schemes)
        return self

    def consumer_group(self) -> str:
        return self.group_id or f"{self.topic_prefix}-monitor"

    def _data_params(self) -> dict[str, float | int | str]:
        if self.data_detector_params is not None:
            return self.data_detector_params
        return {"delta": DATA_ADWIN_DELTA} if self.data_detector == "ADWIN" else {}

    def policy(self) -> MonitorPolicy:
        """What the monitor watches and when it retrains; an unknown detector or parameter
        fails here, at start-up."""
        return MonitorPolicy(
            detector=_checked("concept", self.concept_detector, self.concept_detector_params),
            data_detector=_spec("data", self.data_detector, self._data_params()),
            data_sample_every=self.data_sample_every,
            prediction_detector=_spec(
                "prediction", self.prediction_detector, self.prediction_detector_params
            ),
            max_watched_features=self.max_watched_features,
            accuracy_window=self.accuracy_window,
            history=self.history,
            cooldown_seconds=self.cooldown_seconds,
            retrain_min_samples=self.retrain_min_samples,
            retrain_max_attempts=self.retrain_max_attempts,
            retrain_on_data_drift=self.retrain_on_data_drift,
            training_reference=self.training_reference,
            reference_retry_seconds=self.reference_retry_seconds,
        )


def _spec(kind: str, name: str, params: dict[str, float | int | str]) -> DetectorSpec | None:
    return None if name.lower() == OFF else _checked(kind, name, params)


def _checked(kind: str, name: str, params: dict[str, float | int | str]) -> DetectorSpec:
    try:
        return DetectorSpec(name, dict(params))
    except ValueError as exc:
        raise ValueError(f"{kind}_detector: {exc}") from None
