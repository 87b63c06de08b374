"""The trainer's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter(
    "mlops_trainer_jobs_total",
    "Train requests by what became of them: registered, gates_failed, failed, duplicate, "
    "federated (left to the federation service).",
    ["outcome"],
)
FAILURES = Counter(
    "mlops_trainer_job_failures_total", "Failed jobs by reason (invalid_spec, invalid_data ...).", ["reason"]
)
JOB_SECONDS = Histogram(
    "mlops_trainer_job_seconds",
    "Time from a job's start to its result, reading the window and registering included.",
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 240, 480),
)
RUNNING = Gauge("mlops_trainer_jobs_running", "Jobs this trainer is working on (0 or 1).")
TRIALS = Counter(
    "mlops_trainer_search_trials_total", "Search trials fitted, by estimator family.", ["family"]
)
ASSIGNED_PARTITIONS = Gauge(
    "mlops_trainer_assigned_partitions", "Partitions of the train-requests topic this trainer holds."
)
ONLINE_ROWS = Counter(
    "mlops_trainer_online_rows_total",
    "Feature rows seen by online learning: learned, or undecodable.",
    ["outcome"],
)
ONLINE_SNAPSHOTS = Counter(
    "mlops_trainer_online_snapshots_total", "Online models registered as new versions."
)
