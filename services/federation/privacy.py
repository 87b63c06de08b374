"""Differential privacy of the global model: Gaussian noise on the aggregate, and its budget.

Each site clips its update (its model minus the global one) to an L2 norm of at most
``clipping_norm`` (Flower's ``fixedclipping_mod``, at the site, before secure aggregation
masks it). The server averages the updates of the ``m`` sites it aggregated with equal
weights and adds Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / m``
to the average, i.e. ``noise_multiplier * clipping_norm`` to the sum: adding or removing one
whole site moves the sum by at most ``clipping_norm``, so each round is the Gaussian
mechanism with that noise multiplier, at the level of sites (and so of every row in them).

The budget is accounted by Google's ``dp-accounting`` (Rényi DP accountant, Mironov 2017),
composing one Gaussian mechanism per aggregated round; every site takes part in every
round (no sampling amplification is claimed).

Examples
--------
>>> round(epsilon(noise_multiplier=1.0, rounds=10, delta=1e-5), 2) > 0
True
>>> epsilon(noise_multiplier=2.0, rounds=10, delta=1e-5) < epsilon(noise_multiplier=1.0, rounds=10, delta=1e-5)
True
>>> noise_std(noise_multiplier=1.0, clipping_norm=2.0, sites=4)
0.5
"""

from __future__ import annotations

import math

import numpy as np

from services.federation.model import Arrays

ACCOUNTANT = "rdp (dp-accounting)"


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon spent by ``rounds`` noisy aggregations at ``delta`` (inf without noise)."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    # Installed in the federation's environment only: the platform's never accounts budgets.
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), count=rounds)
    return float(accountant.get_epsilon(delta))


def noise_std(noise_multiplier: float, clipping_norm: float, sites: int) -> float:
    """Standard deviation of the noise on the average of ``sites`` clipped updates."""
    return noise_multiplier * clipping_norm / sites


def add_noise(parameters: Arrays, std: float, rng: np.random.Generator) -> Arrays:
    """``parameters`` plus independent Gaussian noise of ``std`` on every entry."""
    return [p + rng.normal(0.0, std, size=p.shape) for p in parameters]
