"""What a demo run found: the figures it prints as a table and writes as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from rich.table import Table


@dataclass
class DemoReport:
    """What happened, in the figures the demo prints and writes to JSON."""

    run_id: str
    model_name: str = ""
    """The model this run trained, served and retrained (its own unless ``--model`` named one)."""
    first_version: int = 0
    first_holdout_accuracy: float = float("nan")
    accuracy_before_drift: float = float("nan")
    accuracy_after_drift_old_model: float = float("nan")
    drift_onset_sample: int = 0
    drift_detected_at_sample: int = -1
    """The demo's sample counter when the drift event reached it (pipeline lag included)."""
    detection_delay_samples: int = -1
    """Labelled samples after the change the monitor's detector needed before its alarm."""
    onset_error_samples: int = 0
    """Samples between the true onset and the onset the monitor located (positive: late)."""
    monitor_detector: str = ""
    drift_event_id: str = ""
    """The monitor's first concept drift event of this run."""
    retrain_requests: int = 0
    retrain_request_id: str = ""
    new_version: int = 0
    new_holdout_accuracy: float = float("nan")
    new_version_gates: dict[str, bool] = field(default_factory=dict)
    accuracy_after_swap: float = float("nan")
    seconds_drift_to_detection: float = float("nan")
    seconds_drift_to_swap: float = float("nan")
    failed_requests: int = 0
    total_seconds: float = 0.0
    monitor_hold: str = ""
    """What the monitor said held the retrain back, when the loop did not close."""
    loop_closed: bool = False
    verdict: str = ""

    def to_json(self) -> str:
        """The report as JSON, with figures never measured (NaN) as null.

        >>> json.loads(DemoReport(run_id="r", model_name="m").to_json())["accuracy_after_swap"] is None
        True
        """

        def clean(value: object) -> object:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return json.dumps({k: clean(v) for k, v in asdict(self).items()}, indent=2)


def summary_table(report: DemoReport) -> Table:
    table = Table(title=f"Closed loop: {report.verdict}", show_header=False)
    rows = [
        ("model", report.model_name),
        ("first version (holdout accuracy)", f"v{report.first_version} ({report.first_holdout_accuracy})"),
        ("live accuracy before drift", str(report.accuracy_before_drift)),
        ("live accuracy after drift, old model", str(report.accuracy_after_drift_old_model)),
        ("drift onset at sample", str(report.drift_onset_sample)),
        ("detection delay, samples after the change", str(report.detection_delay_samples)),
        ("change located, samples from the true onset", f"{report.onset_error_samples:+d}"),
        ("demo's sample count when the drift event arrived", str(report.drift_detected_at_sample)),
        ("retrain requests", f"{report.retrain_requests} ({report.retrain_request_id})"),
        ("new version (holdout accuracy)", f"v{report.new_version} ({report.new_holdout_accuracy})"),
        ("live accuracy after swap", str(report.accuracy_after_swap)),
        ("seconds from drift onset to detection", str(report.seconds_drift_to_detection)),
        ("seconds from drift onset to swap", str(report.seconds_drift_to_swap)),
        ("failed prediction requests", str(report.failed_requests)),
        ("total seconds", str(report.total_seconds)),
    ]
    if report.monitor_hold:
        rows.append(("the monitor held the retrain back", report.monitor_hold))
    for name, value in rows:
        table.add_row(name, value)
    return table
