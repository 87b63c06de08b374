"""The federation's strategy: Flower's FedAvg averaging, with the platform's rules around it.

On the server FedProx is FedAvg (Flower's own ``FedProx`` strategy only adds the proximal
weight to the instructions); the difference lives in the sites' local objective, which
the spec carries to them. Around Flower's weighted average this strategy adds:

- **who trains**: the sites that answered the first query without a problem, never a
  holdout site; a round with fewer than ``min_sites`` of them connected is skipped;
- **min_sites valid updates**: dropped and refused sites (see :mod:`exchange`) are left
  out, and a round with fewer than ``min_sites`` updates left does not change the model;
- **the aggregate is checked** like an update before it becomes the global model;
- **differential privacy**: Gaussian noise on the average, scaled to the sites actually
  aggregated, and the budget spent so far (:mod:`privacy`) recorded with the round;
- **evaluation** of the final model by every usable site (holdout sites included), each
  on rows it never trained on.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from services.federation import privacy, protocol
from services.federation.model import Arrays
from services.federation.spec import FederationSpec
from services.federation.status import Round, RunRecorder
from services.federation.updates import RefusedUpdate, check_aggregate


class FederatedStrategy(FedAvg):
    def __init__(self, spec: FederationSpec, initial: Arrays, recorder: RunRecorder):
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=spec.strategy.min_sites,
            min_evaluate_clients=1,
            min_available_clients=spec.strategy.min_sites,
            accept_failures=True,
            initial_parameters=ndarrays_to_parameters(initial),
        )
        self.spec = spec
        self.shapes = [tuple(a.shape) for a in initial]
        self.recorder = recorder
        self.trainers: set[int] = set()
        self.evaluators: set[int] = set()
        self.noised_rounds = 0
        self.evaluation: dict[str, Any] = {}
        # The noise must not be predictable: fresh operating-system entropy, never the spec's seed.
        self._noise = np.random.default_rng()

    def __repr__(self) -> str:
        return f"FederatedStrategy({self.spec.strategy.name})"

    # -- sites -------------------------------------------------------------------------------

    def use_sites(self, trainers: set[int], evaluators: set[int]) -> None:
        """The node ids that train (and those that only evaluate), from the first query."""
        self.trainers = set(trainers)
        self.evaluators = set(evaluators) | self.trainers

    def _current(self, number: int) -> Round:
        rounds = self.recorder.status.rounds
        if not rounds or rounds[-1].number != number:
            rounds.append(Round(number=number, started_at=time.time()))
        return rounds[-1]

    def site_name(self, node_id: int) -> str:
        site = self.recorder.status.sites.get(str(node_id))
        return site.name if site else f"node-{node_id}"

    def refused(self, node_id: int, reason: str) -> None:
        """The exchange refused a site's reply in the round under way."""
        rounds = self.recorder.status.rounds
        if rounds and not rounds[-1].finished_at:
            rounds[-1].refused[self.site_name(node_id)] = reason
            self.recorder.save()

    # -- training ----------------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        proxies = [p for p in client_manager.all().values() if p.node_id in self.trainers]
        current = self._current(server_round)
        current.asked = sorted(self.site_name(p.node_id) for p in proxies)
        if len(proxies) < self.spec.strategy.min_sites:
            current.finished_at = time.time()
            self.recorder.save()
            return []
        self.recorder.save()
        config = protocol.instruction(self.spec, server_round)
        return [(proxy, FitIns(parameters, config)) for proxy in proxies]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        current = self._current(server_round)
        current.aggregated = sorted(self.site_name(proxy.node_id) for proxy, _ in results)
        current.dropped = sorted(set(current.asked) - set(current.aggregated) - set(current.refused))
        try:
            if len(results) < self.spec.strategy.min_sites:
                return None, {}
            aggregated, _ = super().aggregate_fit(server_round, results, [])
            if aggregated is None:
                return None, {}
            arrays = parameters_to_ndarrays(aggregated)
            try:
                check_aggregate(arrays, self.shapes)
            except RefusedUpdate as exc:
                current.refused["aggregate"] = str(exc)
                return None, {}
            if self.spec.privacy.enabled:
                arrays = self._add_noise(arrays, len(results), current)
            current.applied = True
            return ndarrays_to_parameters(arrays), {}
        finally:
            current.finished_at = time.time()
            self.recorder.status.epsilon = self.epsilon()
            self.recorder.save()

    def _add_noise(self, arrays: Arrays, sites: int, current: Round) -> Arrays:
        settings = self.spec.privacy
        std = privacy.noise_std(settings.noise_multiplier, settings.clipping_norm, sites)
        self.noised_rounds += 1
        current.noise_std = std
        current.epsilon = self.epsilon()
        return privacy.add_noise(arrays, std, self._noise)

    def epsilon(self) -> float:
        """The budget spent by the rounds released so far (0 without privacy)."""
        if not self.spec.privacy.enabled:
            return 0.0
        return privacy.epsilon(
            self.spec.privacy.noise_multiplier, self.noised_rounds, self.spec.privacy.delta
        )

    # -- evaluation --------------------------------------------------------------------------

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if server_round != self.spec.strategy.rounds:
            return []
        proxies = [p for p in client_manager.all().values() if p.node_id in self.evaluators]
        config = protocol.instruction(self.spec, server_round)
        return [(proxy, EvaluateIns(parameters, config)) for proxy in proxies]

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        self.evaluation = evaluation_summary(
            {self.site_name(proxy.node_id): res for proxy, res in results},
            holdout={self.site_name(n) for n in self.evaluators - self.trainers},
        )
        # Beside the production model's scores from before the rounds (``parent``), if any.
        self.recorder.status.evaluation = {**self.recorder.status.evaluation, **self.evaluation}
        self.recorder.save()
        loss = self.evaluation.get("loss")
        return (float(loss) if loss is not None else None), {}


def evaluation_summary(results: dict[str, EvaluateRes], holdout: set[str]) -> dict[str, Any]:
    """Per-site accuracy and loss, and their row-weighted averages over training and holdout sites."""
    sites = {
        name: {
            "accuracy": float(res.metrics.get(protocol.ACCURACY, 0.0)),
            "loss": float(res.loss),
            "rows": int(res.num_examples),
        }
        for name, res in sorted(results.items())
    }
    summary: dict[str, Any] = {"sites": sites}
    for group, names in (("", set(sites) - holdout), ("holdout_", set(sites) & holdout)):
        rows = sum(sites[n]["rows"] for n in names)
        if rows:
            summary[f"{group}accuracy"] = sum(sites[n]["accuracy"] * sites[n]["rows"] for n in names) / rows
            summary[f"{group}loss"] = sum(sites[n]["loss"] * sites[n]["rows"] for n in names) / rows
            summary[f"{group}rows"] = rows
    return summary
