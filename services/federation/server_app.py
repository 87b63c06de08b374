"""The federation's Flower ServerApp: one run, from waiting for sites to the global model.

The federation service submits a run with ``flwr run``; Flower's SuperLink starts this
app with the run's directory in its run config. The app:

1. waits for the sites to connect (``expected_sites``, at least ``min_sites``);
2. asks each what it is (name, role, row counts, any problem its data has with the spec);
3. when the run starts from the production version, has every site score it first, so
   the final model is compared with it on the same rows;
4. runs the rounds with Flower's default workflow, training through SecAgg+ when secure
   aggregation is on, every exchange going through :class:`exchange.ServerGrid`;
5. leaves the final parameters (``result.npz``) and the run's status for the service.

A failure ends the run ``failed`` with the reason in ``status.json``; nothing is registered.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.common import (
    Code,
    EvaluateIns,
    GetPropertiesIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid, ServerApp

from services.federation import protocol
from services.federation.exchange import Screen, ServerGrid
from services.federation.privacy import epsilon
from services.federation.spec import FederationSpec
from services.federation.status import (
    FAILED,
    FINISHED,
    RESULT_FILE,
    RUNNING,
    RunInputs,
    RunRecorder,
    RunStatus,
    Site,
    write_arrays,
)
from services.federation.strategy import FederatedStrategy, evaluation_summary
from services.federation.updates import RefusedUpdate, check_update

RUN_DIR = "run-dir"
"""The run config key naming the run's directory."""
MODULUS = 2**32
"""SecAgg+'s masking modulus (Flower's default)."""


class RunFailed(Exception):
    """The run cannot go on; the message says why."""


class SecureAggregation(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, with sites that drop before sharing their keys let go.

    In flwr 1.42 every site sent the setup stays "sampled", so one that drops before the
    key-sharing stage counts as dead at unmasking: the server asks the others for shares
    of its key, which it never shared, and the round halts; and removing a dead site's
    pairwise masks looks up the public keys of all its neighbours, such a site included.
    A site that drops before sharing its keys never entered anyone's masks (they are built
    only with sites whose key shares arrived), so after the key-sharing stage only the
    sites that shared keys are the round's sample and each other's neighbours.
    """

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        super().share_keys_stage(grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        # Masks are only ever built with these sites: unmasking a dead site's pairwise masks
        # must not look for the keys of a neighbour that never shared any.
        for node in state.nid_to_neighbours:
            state.nid_to_neighbours[node] &= state.sampled_node_ids | {node}
        # Flower's threshold check, over the sites that are still in the round.
        return all(
            len(state.nid_to_neighbours[node] & state.active_node_ids) >= state.threshold
            for node in state.sampled_node_ids
        )


class Federation:
    """One run of one spec, recorded in ``directory``."""

    def __init__(self, directory: Path):
        inputs = RunInputs.read(directory)
        self.spec = FederationSpec.parse(json.loads(inputs.spec_json))
        self.parent_version = inputs.parent_version
        self.architecture = protocol.architecture(self.spec)
        shapes = self.architecture.shapes()
        self.initial = (
            inputs.initial if inputs.initial is not None else self.architecture.initial(self.spec.seed)
        )
        self.recorder = RunRecorder(
            directory,
            RunStatus(
                model_name=self.spec.model_name,
                strategy=self.spec.strategy.name,
                secure_aggregation=self.spec.secure_aggregation.enabled,
                rounds_planned=self.spec.strategy.rounds,
                delta=self.spec.privacy.delta if self.spec.privacy.enabled else 0.0,
            ),
        )
        self.directory = directory
        self.strategy = FederatedStrategy(self.spec, self.initial, self.recorder)
        self.screen = Screen(shapes, MODULUS)

    def run(self, grid: Grid, context: Context) -> None:
        status = self.recorder.status
        try:
            check_update(self.initial, self.architecture.shapes())
            self._check_budget()
            exchange = ServerGrid(
                grid,
                timeout=self.spec.strategy.round_timeout_seconds,
                recorder=self.recorder,
                screen=self.screen,
                site_name=self.strategy.site_name,
                on_refused=self.strategy.refused,
            )
            nodes = self._wait_for_sites(exchange)
            self._query(exchange, nodes)
            status.state = RUNNING
            self.recorder.save()
            if self.parent_version:
                status.evaluation = {"parent": self._evaluate(exchange, self.strategy.evaluators)}
                self.recorder.save()
            legacy = LegacyContext(
                context=context,
                config=ServerConfig(
                    num_rounds=self.spec.strategy.rounds,
                    round_timeout=self.spec.strategy.round_timeout_seconds,
                ),
                strategy=self.strategy,
            )
            DefaultWorkflow(fit_workflow=self._fit_workflow())(exchange, legacy)
            for unfinished in (r for r in status.rounds if not r.finished_at):
                # SecAgg+ halted the round (too few sites left to unmask): it changed nothing.
                unfinished.finished_at = time.time()
            if not any(r.applied for r in status.rounds):
                raise RunFailed(f"no round had {self.spec.strategy.min_sites} valid updates")
            final = parameters_to_ndarrays(
                compat.arrayrecord_to_parameters(
                    legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
                )
            )
            check_update(final, self.architecture.shapes())
            write_arrays(self.directory / RESULT_FILE, final)
            status.state = FINISHED
        except (RunFailed, RefusedUpdate) as exc:
            status.state, status.error = FAILED, str(exc)
        except Exception as exc:
            status.state = FAILED
            status.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            status.epsilon = self.strategy.epsilon()
            status.finished_at = time.time()
            self.recorder.save()

    def _check_budget(self) -> None:
        settings = self.spec.privacy
        if not settings.enabled:
            return
        planned = epsilon(settings.noise_multiplier, self.spec.strategy.rounds, settings.delta)
        if planned > settings.max_epsilon:
            raise RunFailed(
                f"privacy: {self.spec.strategy.rounds} rounds at noise multiplier {settings.noise_multiplier} "
                f"spend epsilon {planned:.2f} at delta {settings.delta:g}, over max_epsilon {settings.max_epsilon:g}"
            )

    def _fit_workflow(self) -> SecureAggregation | None:
        settings = self.spec.secure_aggregation
        if not settings.enabled:
            return None
        return SecureAggregation(
            num_shares=settings.num_shares,
            reconstruction_threshold=settings.reconstruction_threshold,
            max_weight=1.0 if self.spec.weighting == "uniform" else settings.max_weight,
            clipping_range=settings.clipping_range,
            quantization_range=settings.quantization_range,
            modulus_range=MODULUS,
            timeout=self.spec.strategy.round_timeout_seconds,
        )

    def _wait_for_sites(self, grid: Grid) -> list[int]:
        strategy = self.spec.strategy
        wanted = max(strategy.expected_sites, strategy.min_sites)
        deadline = time.monotonic() + strategy.connect_timeout_seconds
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= wanted:
                return nodes
            if time.monotonic() >= deadline:
                if len(nodes) >= strategy.min_sites:
                    return nodes
                raise RunFailed(
                    f"{len(nodes)} site(s) connected within {strategy.connect_timeout_seconds:g}s, "
                    f"min_sites is {strategy.min_sites}"
                )
            time.sleep(0.5)

    def _query(self, grid: Grid, nodes: list[int]) -> None:
        """Ask every site what it is; use those that answered without a problem."""
        config = protocol.instruction(self.spec)
        replies = grid.send_and_receive(
            Message(
                content=compat.getpropertiesins_to_recorddict(GetPropertiesIns(config)),
                dst_node_id=node,
                message_type=MessageTypeLegacy.GET_PROPERTIES,
                group_id="0",
            )
            for node in nodes
        )
        sites = self.recorder.status.sites
        for node in nodes:
            sites[str(node)] = Site(name=f"node-{node}", refused="did not answer the first query in time")
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                sites[str(node)].refused = f"answered the first query with an error: {reply.error.reason}"
                continue
            properties = compat.recorddict_to_getpropertiesres(reply.content).properties
            site = Site(
                name=str(properties.get(protocol.PROPERTY_SITE, "")) or f"node-{node}",
                role=str(properties.get(protocol.PROPERTY_ROLE, protocol.TRAIN_ROLE)),
                train_rows=_count(properties.get(protocol.PROPERTY_TRAIN_ROWS)),
                eval_rows=_count(properties.get(protocol.PROPERTY_EVAL_ROWS)),
                refused=str(properties.get(protocol.PROPERTY_PROBLEM, ""))[:1000],
            )
            if not site.refused and any(s.name == site.name and not s.refused for s in sites.values()):
                site.refused = f"another site already uses the name {site.name!r}"
            sites[str(node)] = site
        usable = {int(n): s for n, s in sites.items() if not s.refused}
        trainers = {n for n, s in usable.items() if s.role == protocol.TRAIN_ROLE}
        self.strategy.use_sites(trainers, set(usable))
        self.recorder.save()
        if len(trainers) < self.spec.strategy.min_sites:
            problems = "; ".join(f"{s.name}: {s.refused}" for s in sites.values() if s.refused)
            raise RunFailed(
                f"{len(trainers)} usable training site(s), min_sites is {self.spec.strategy.min_sites}"
                + (f" ({problems})" if problems else "")
            )

    def _evaluate(self, grid: Grid, nodes: Iterable[int]) -> dict[str, object]:
        """Every site's score of the starting (production) model, on the rows it evaluates on."""
        instruction = EvaluateIns(ndarrays_to_parameters(self.initial), protocol.instruction(self.spec))
        replies = grid.send_and_receive(
            Message(
                content=compat.evaluateins_to_recorddict(instruction, keep_input=True),
                dst_node_id=node,
                message_type=MessageType.EVALUATE,
                group_id="0",
            )
            for node in nodes
        )
        results = {}
        for reply in replies:
            if reply.has_error():
                continue
            result = compat.recorddict_to_evaluateres(reply.content)
            if result.status.code == Code.OK:
                results[self.strategy.site_name(reply.metadata.src_node_id)] = result
        holdout = {self.strategy.site_name(n) for n in self.strategy.evaluators - self.strategy.trainers}
        return evaluation_summary(results, holdout)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    Federation(Path(str(context.run_config[RUN_DIR]))).run(grid, context)
