"""The privacy budget, from the federation's own environment (dp-accounting lives there):
dp-accounting's RDP accountant must lie between the exact epsilon of the composed Gaussian
mechanism and the classic RDP-to-(epsilon, delta) conversion, both computed here."""

from __future__ import annotations

import json
import math
import subprocess
from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from tests.integration.federation.conftest import FEDERATION_BIN

CASES = [(0.45, 4), (1.0, 10), (2.0, 50)]
DELTA = 1e-5
SCRIPT = """
import doctest, json
from services.federation import privacy
cases = json.loads(input())
failed = doctest.testmod(privacy).failed
print(json.dumps({"doctests_failed": failed, "epsilons": [privacy.epsilon(z, t, d) for z, t, d in cases]}))
"""


@pytest.fixture(scope="module")
def accounted() -> dict[str, Any]:
    """One interpreter for every case (importing dp-accounting takes seconds)."""
    result = subprocess.run(
        [str(FEDERATION_BIN / "python"), "-c", SCRIPT],
        input=json.dumps([[z, t, DELTA] for z, t in CASES]),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(result.stdout))


def exact_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """T Gaussian mechanisms of sensitivity 1 compose to one with noise sigma / sqrt(T); its
    tight delta(epsilon) (Balle and Wang, 2018) inverted for epsilon."""
    mu = math.sqrt(rounds) / noise_multiplier

    def excess(eps: float) -> float:
        return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)) - delta

    return float(brentq(excess, 1e-9, 500))


def classic_rdp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Mironov's conversion: min over orders a of T*a/(2 sigma^2) + log(1/delta)/(a - 1)."""
    orders = np.linspace(1.01, 1000, 200_000)
    return float(np.min(rounds * orders / (2 * noise_multiplier**2) + math.log(1 / delta) / (orders - 1)))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_accountant_is_sound_and_not_loose(accounted: dict[str, Any], case: int) -> None:
    noise, rounds = CASES[case]
    epsilon = accounted["epsilons"][case]
    assert exact_epsilon(noise, rounds, DELTA) <= epsilon <= classic_rdp_epsilon(noise, rounds, DELTA)


def test_privacy_doctests_run_where_the_accountant_is(accounted: dict[str, Any]) -> None:
    assert accounted["doctests_failed"] == 0


def test_the_budget_command_reports_what_a_spec_would_spend() -> None:
    result = subprocess.run(
        [str(FEDERATION_BIN / "python"), "-m", "services.federation", "budget", "--noise-multiplier", "0.45"]
        + ["--rounds", "4", "--delta", str(DELTA)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert report["rounds"] == 4 and exact_epsilon(0.45, 4, DELTA) <= report["epsilon"]
