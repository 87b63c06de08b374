"""The console's Prometheus metrics (``mlops_console_*``): who gets in, and what people change."""

from __future__ import annotations

from prometheus_client import Counter

PREFIX = "mlops_console"

SIGN_INS = Counter(
    f"{PREFIX}_sign_ins_total",
    "Sign-in attempts by outcome: accepted, refused (the platform refused the token), "
    "not_a_token, forged_form (no valid sign-in form token), unavailable.",
    ["outcome"],
)
for _outcome in ("accepted", "refused", "not_a_token", "forged_form", "unavailable"):
    SIGN_INS.labels(_outcome)  # every outcome exported from the start, at zero

ACTIONS = Counter(
    f"{PREFIX}_actions_total",
    "Changes people asked for through the console, by action and outcome (ok, or the kind of "
    "error the registry answered: permission, conflict ...).",
    ["action", "outcome"],
)
