"""Settings are checked at start-up: a bad value stops the monitor naming it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.settings import MonitorSettings
from tests.helpers.keys import KEYS

PUBLIC_KEYS = KEYS.public_keys


def test_detector_and_parameters_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", PUBLIC_KEYS)
    monkeypatch.setenv("MONITOR_CONCEPT_DETECTOR", "PageHinkley")
    monkeypatch.setenv("MONITOR_CONCEPT_DETECTOR_PARAMS", '{"threshold": 30, "min_instances": 50}')
    monkeypatch.setenv("MONITOR_COOLDOWN_SECONDS", "120")
    settings = MonitorSettings()
    assert settings.policy().detector.build().threshold == 30
    assert settings.cooldown_seconds == 120
    assert settings.http_port == 8082
    assert settings.consumer_group() == "mlops-monitor"


def test_data_drift_adwin_is_stricter_by_default_since_every_feature_is_a_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", PUBLIC_KEYS)
    data = MonitorSettings().policy().data_detector
    assert data is not None and data.name == "ADWIN" and data.params == {"delta": 0.0002}
    monkeypatch.setenv("MONITOR_DATA_DETECTOR", "KSWIN")
    data = MonitorSettings().policy().data_detector
    assert data is not None and data.params == {}
    monkeypatch.setenv("MONITOR_DATA_DETECTOR", "ADWIN")
    monkeypatch.setenv("MONITOR_DATA_DETECTOR_PARAMS", '{"delta": 0.01}')
    data = MonitorSettings().policy().data_detector
    assert data is not None and data.params == {"delta": 0.01}


def test_data_and_prediction_drift_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", PUBLIC_KEYS)
    monkeypatch.setenv("MONITOR_DATA_DETECTOR", "off")
    monkeypatch.setenv("MONITOR_PREDICTION_DETECTOR", "KSWIN")
    monkeypatch.setenv("MONITOR_PREDICTION_DETECTOR_PARAMS", '{"seed": 1}')
    policy = MonitorSettings().policy()
    assert policy.data_detector is None
    assert policy.prediction_detector is not None and policy.prediction_detector.name == "KSWIN"


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("MONITOR_CONCEPT_DETECTOR", "ADWN", "concept_detector: unknown detector"),
        ("MONITOR_CONCEPT_DETECTOR", "off", "concept_detector: unknown detector"),
        ("MONITOR_DATA_DETECTOR", "KSWIM", "data_detector: unknown detector"),
        ("MONITOR_CONCEPT_DETECTOR_PARAMS", '{"delta_": 1}', "bad parameters for ADWIN"),
        ("MONITOR_RETRAIN_MIN_SAMPLES", "0", "retrain_min_samples"),
        ("MONITOR_GROUP_ID", "bad group!", "group_id"),
    ],
)
def test_bad_settings_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", PUBLIC_KEYS)
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=message):
        MonitorSettings()
