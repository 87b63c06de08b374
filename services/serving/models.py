"""The models being served: loaded from the registry, verified, warmed and swapped atomically.

The registry is the truth. Events only say "look again": on each, the manager re-reads
the model's aliases and makes the served set match. A new version is downloaded and
loaded through its flavor (digest first, then the flavor's own checks), it is warmed
with a dummy batch, and only then does it replace the served one, in one assignment. A
request holds the version it resolved to, so requests in flight finish on the version
they started on. Recently served versions stay in memory, so a rollback swaps without a
download.

A production version that cannot be served never takes a working model away: the
replica keeps answering with what it serves, and a replica that serves nothing yet (a
restart) falls back to the newest earlier production version that loads, per the
registry's alias history. Either way the model says so (``fallback_from``, its reason
in the repository index, a gauge) until production can be served again.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from services.common.aliases import CANDIDATE, PRODUCTION
from services.common.artifacts import ArtifactError
from services.common.auth import DEFAULT_TEAM, Principal, Scope
from services.common.errors import FailedPrecondition, NotFound
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import registry_pb2
from services.serving.batching import Batcher, BatchObserver
from services.serving.errors import Forbidden, InvalidInput, ModelNotFound, ModelUnavailable
from services.serving.predictor import Predictor, SignatureError
from services.serving.routing import ModelPolicy, Rollout, canary_chosen, read_policy

log = get_logger(__name__)


class ModelSource(Protocol):
    """What the manager needs of the registry (``RegistryClient`` provides it)."""

    async def get_model(self, name: str) -> registry_pb2.Model: ...

    async def list_models(self, alias: str = "") -> list[registry_pb2.Model]: ...

    async def download_artifact(
        self, name: str, version: int = 0, alias: str = ""
    ) -> tuple[registry_pb2.ModelVersion, bytes]: ...

    async def alias_history(
        self, name: str, alias: str = "", limit: int = 100
    ) -> list[registry_pb2.AliasChange]: ...


class ModelState(StrEnum):
    """The model-repository extension's states."""

    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


class LoadError(Exception):
    """A version that cannot be served, with a reason an operator can act on."""


@dataclass(frozen=True, eq=False)
class LoadedVersion:
    """A verified, warmed version and the batcher its requests go through (equal only to itself)."""

    predictor: Predictor
    batcher: Batcher
    tags: Mapping[str, str]

    @property
    def number(self) -> int:
        return self.predictor.version


@dataclass(frozen=True)
class ServedModel:
    """One model as served right now; replaced whole, never changed in place."""

    name: str
    state: ModelState
    versions: Mapping[str, LoadedVersion] = field(default_factory=dict)
    policy: ModelPolicy = field(default_factory=ModelPolicy)
    reason: str = ""
    team: str = DEFAULT_TEAM
    """The team that owns the model (from the registry): only its callers may use it."""
    fallback_from: int = 0
    """The production version that cannot be served while an earlier one answers for it (0: none)."""

    def aliases_of(self, number: int) -> list[str]:
        return [alias for alias, loaded in self.versions.items() if loaded.number == number]

    def by_number(self, number: int) -> LoadedVersion | None:
        return next((v for v in self.versions.values() if v.number == number), None)

    def describe_versions(self) -> str:
        return ", ".join(f"{v.number} ({alias})" for alias, v in self.versions.items()) or "none"


@dataclass(frozen=True)
class Route:
    """Where one request goes: the version that answers, under which route, and a shadow."""

    model: ServedModel
    target: LoadedVersion
    route: str
    shadow: LoadedVersion | None = None


DEFAULT_POLICY = ModelPolicy()
FALLBACK_CANDIDATES = 5
"""Earlier production versions tried, newest first, when the current one cannot be served."""
ObserverFactory = Callable[[str, int], BatchObserver]


def shown(name: str, limit: int = 128) -> str:
    """A client-supplied name as it may appear in an error message."""
    return name if len(name) <= limit else name[:limit] + "..."


class ModelManager:
    """Keeps the served models in step with the registry and routes requests to them.

    Parameters
    ----------
    source
        The registry (a ``RegistryClient``).
    served_aliases
        Aliases whose versions are loaded; ``production`` must be among them.
    defaults
        Rollout and batching for models whose tags do not say.
    predict_executor
        Where predict calls run.
    max_queue_rows, inline_rows
        Per-version batcher limits (see :class:`Batcher`).
    retained_versions
        Versions per model kept in memory after they stop being served.
    observer_factory
        Builds the batch observer (metrics) for a model name and version.
    on_change
        Called with the served models after every change.
    signing_key
        The platform's artifact signing key: river models (signed pickles) are served only
        when their HMAC verifies under it, and refused without it.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        served_aliases: Iterable[str] = (PRODUCTION, CANDIDATE),
        defaults: ModelPolicy = DEFAULT_POLICY,
        predict_executor: concurrent.futures.Executor | None = None,
        max_queue_rows: int = 8192,
        inline_rows: int = 0,
        retained_versions: int = 2,
        observer_factory: ObserverFactory | None = None,
        retry_delay: float = 1.0,
        rng: random.Random | None = None,
        on_change: Callable[[Mapping[str, ServedModel]], None] | None = None,
        signing_key: bytes | None = None,
    ):
        self._source = source
        self._aliases = tuple(dict.fromkeys([PRODUCTION, *served_aliases]))
        self._defaults = defaults
        self._executor = predict_executor
        self._max_queue_rows = max_queue_rows
        self._inline_rows = inline_rows
        self._retained = retained_versions
        self._observer_factory = observer_factory or (lambda name, version: BatchObserver())
        self._retry_delay = retry_delay
        self._rng = rng or random.Random()
        self._on_change = on_change or (lambda models: None)
        self._signing_key = signing_key
        self._models: dict[str, ServedModel] = {}
        self._cache: dict[tuple[str, int], LoadedVersion] = {}
        self._recent: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._failed: dict[tuple[str, int], str] = {}
        self._syncs: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._read_once = False
        self.changed = asyncio.Condition()

    # -- reading -------------------------------------------------------------------------------

    @property
    def models(self) -> Mapping[str, ServedModel]:
        return self._models

    def get(self, name: str, caller: Principal | None = None) -> ServedModel:
        """The served model, or :class:`ModelNotFound` (also for a model of a team ``caller``
        does not act for, so other teams' model names do not leak); :class:`Forbidden` when
        ``caller`` lacks the predict scope in the model's team (no caller: no check);
        :class:`ModelUnavailable` before the first full read of the registry, which may still
        be loading it (NOT_FOUND tells a client not to retry, and a restarted replica would
        tell it so for every model)."""
        model = self._models.get(name)
        if model is None and not self._read_once:
            raise ModelUnavailable(
                f"model '{shown(name)}' is not loaded yet: serving is still reading the registry"
            )
        if model is None or (caller is not None and not caller.acts_for(model.team)):
            raise ModelNotFound(f"model '{shown(name)}' is not served")
        if caller is not None and not caller.may(Scope.PREDICT, model.team):
            raise Forbidden(f"{caller.subject!r} lacks scope 'predict' in team {model.team!r}")
        return model

    def ready_model(self, name: str, caller: Principal | None = None) -> ServedModel:
        """The served model if it can answer, else NOT_FOUND or UNAVAILABLE."""
        model = self.get(name, caller)
        if model.state is not ModelState.READY:
            raise ModelUnavailable(f"model '{name}' is {model.state.value.lower()}: {model.reason}")
        return model

    def version(self, name: str, version: str, caller: Principal | None = None) -> LoadedVersion:
        """A served version by number (empty: production), or NOT_FOUND/UNAVAILABLE."""
        model = self.ready_model(name, caller)
        if not version:
            return model.versions[PRODUCTION]
        number = parse_version(version)
        loaded = model.by_number(number)
        if loaded is None:
            raise ModelNotFound(
                f"version {number} of model '{name}' is not served; served: {model.describe_versions()}"
            )
        return loaded

    def route(
        self,
        name: str,
        version: str = "",
        alias: str = "",
        routing_key: str | None = None,
        caller: Principal | None = None,
    ) -> Route:
        """Where a request for ``name`` goes, pinned by ``version`` or ``alias`` or by the rollout."""
        model = self.ready_model(name, caller)
        if version:
            target = self.version(name, version, caller)
            if alias and model.versions.get(alias) is not target:
                raise InvalidInput(
                    f"model_version {target.number} and alias '{shown(alias)}' disagree; "
                    f"served: {model.describe_versions()}"
                )
            return Route(model, target, alias or (model.aliases_of(target.number) or ["version"])[0])
        if alias:
            pinned = model.versions.get(alias)
            if pinned is None:
                raise ModelNotFound(
                    f"alias '{shown(alias)}' of model '{name}' is not served; "
                    f"served: {model.describe_versions()}"
                )
            return Route(model, pinned, alias)
        production = model.versions[PRODUCTION]
        candidate = model.versions.get(CANDIDATE)
        if candidate is None or candidate is production or model.policy.rollout is Rollout.NONE:
            return Route(model, production, PRODUCTION)
        if model.policy.rollout is Rollout.SHADOW:
            return Route(model, production, PRODUCTION, shadow=candidate)
        if canary_chosen(model.policy.canary_share, routing_key, self._rng):
            return Route(model, candidate, CANDIDATE)
        return Route(model, production, PRODUCTION)

    # -- keeping in step with the registry -----------------------------------------------------

    async def sync_all(self) -> None:
        """Re-read every served model from the registry (start-up, and periodically)."""
        self._failed.clear()
        listed = await self._source.list_models(alias=PRODUCTION)
        names = {m.name for m in listed} | set(self._models)
        await asyncio.gather(*(self.sync(name) for name in sorted(names)))
        self._read_once = True

    def request_sync(self, name: str) -> None:
        """Make ``name`` match the registry soon; requests during a sync coalesce into one more."""
        task = self._syncs.get(name)
        if task is not None and not task.done():
            self._again.add(name)
            return
        self._syncs[name] = asyncio.create_task(self._sync_loop(name), name=f"sync:{name}")

    async def sync(self, name: str) -> None:
        """:meth:`request_sync`, then wait until the model matches the registry."""
        self.request_sync(name)
        task = self._syncs[name]
        await asyncio.shield(task)

    async def close(self) -> None:
        tasks = [t for t in self._syncs.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sync_loop(self, name: str) -> None:
        attempt = 0
        while True:
            self._again.discard(name)
            try:
                await self._sync_model(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.warning("model_sync_failed", model=name, attempt=attempt, error=repr(exc))
                if attempt >= 5:
                    # The periodic full sync will try again; keep serving what we have.
                    return
                await asyncio.sleep(self._retry_delay * attempt)
                continue
            attempt = 0
            if name not in self._again:
                return

    async def _sync_model(self, name: str) -> None:
        try:
            registered = await self._source.get_model(name)
        except NotFound:
            await self._remove(name, "the model is not in the registry")
            return
        wanted = {a: int(registered.aliases[a]) for a in self._aliases if a in registered.aliases}
        if PRODUCTION not in wanted:
            await self._remove(name, "the model has no production alias")
            return
        current = self._models.get(name)
        if current is None:
            await self._publish(
                ServedModel(
                    name,
                    ModelState.LOADING,
                    reason=f"loading version {wanted[PRODUCTION]}",
                    team=registered.team,
                )
            )
        loaded: dict[str, LoadedVersion] = {}
        problems: list[str] = []
        for alias, number in wanted.items():
            try:
                loaded[alias] = await self._loaded(name, number)
            except LoadError as exc:
                problems.append(f"version {number} ({alias}) cannot be served: {exc}")
        fallback_from = 0
        if PRODUCTION not in loaded:
            reason = "; ".join(problems)
            if current is not None and current.state is ModelState.READY:
                log.error("production_load_failed_keeping_current", model=name, reason=reason)
                await self._publish(
                    replace(current, reason=reason, fallback_from=wanted[PRODUCTION], team=registered.team)
                )
                return
            fallback = await self._fallback(name, wanted[PRODUCTION])
            if fallback is None:
                await self._publish(
                    ServedModel(name, ModelState.UNAVAILABLE, reason=reason, team=registered.team)
                )
                return
            log.error(
                "production_load_failed_serving_earlier",
                model=name,
                refused=wanted[PRODUCTION],
                serving=fallback.number,
                reason=reason,
            )
            loaded[PRODUCTION] = fallback
            fallback_from = wanted[PRODUCTION]
            problems.append(f"serving version {fallback.number}, production before it, until then")
        candidate_tags = loaded[CANDIDATE].tags if CANDIDATE in loaded else {}
        policy = read_policy(registered.tags, candidate_tags, self._defaults)
        if policy.problems:
            log.warning("model_policy_tags_ignored", model=name, problems=list(policy.problems))
        for version in loaded.values():
            version.batcher.max_batch_rows = policy.max_batch_rows
            version.batcher.max_wait = policy.max_batch_wait_ms / 1000
        previous = current.versions if current is not None else {}
        await self._publish(
            ServedModel(
                name,
                ModelState.READY,
                loaded,
                policy,
                reason="; ".join([*problems, *policy.problems]),
                team=registered.team,
                fallback_from=fallback_from,
            )
        )
        self._retire(name, [v for v in previous.values() if v not in loaded.values()])
        swapped = {a: v.number for a, v in loaded.items() if previous.get(a) is not v}
        if swapped:
            log.info("model_versions_served", model=name, versions=swapped, rollout=policy.rollout.value)

    async def _fallback(self, name: str, refused: int) -> LoadedVersion | None:
        """The newest earlier production version that loads, per the alias history, or None."""
        try:
            changes = await self._source.alias_history(name, PRODUCTION)
        except Exception as exc:  # without the history nothing earlier is proven: stay unavailable
            log.warning("alias_history_unreadable", model=name, error=repr(exc))
            return None
        for number in earlier_versions(changes, refused)[:FALLBACK_CANDIDATES]:
            try:
                return await self._loaded(name, number)
            except LoadError:
                continue
        return None

    async def _loaded(self, name: str, number: int) -> LoadedVersion:
        key = (name, number)
        cached = self._cache.get(key)
        if cached is not None:
            self._recent.pop(key, None)
            return cached
        if key in self._failed:
            raise LoadError(self._failed[key])
        try:
            loaded = await self._load(name, number)
        except LoadError as exc:
            self._failed[key] = str(exc)
            log.warning("model_version_refused", model=name, version=number, reason=str(exc))
            raise
        self._cache[key] = loaded
        return loaded

    async def _load(self, name: str, number: int) -> LoadedVersion:
        try:
            version, data = await self._source.download_artifact(name, version=number)
        except ArtifactError as exc:
            raise LoadError(str(exc)) from None
        except (NotFound, FailedPrecondition) as exc:
            raise LoadError(f"the registry refused the download: {exc.message}") from None
        loop = asyncio.get_running_loop()
        try:
            flavored = flavor(version.artifact.format)
            runtime = await loop.run_in_executor(
                None,
                lambda: flavored.load(StoredArtifact.of(version, data), signing_key=self._signing_key),
            )
            predictor = Predictor(
                name,
                int(version.version),
                runtime,
                version.signature,
                family=version.params.get("family") or version.tags.get("family", ""),
            )
        except (ArtifactError, SignatureError) as exc:
            raise LoadError(str(exc)) from None
        except Exception as exc:  # whatever else a model library raises: this version is not servable
            raise LoadError(f"artifact does not load: {type(exc).__name__}: {exc}") from None
        await self._warm(predictor)
        batcher = Batcher(
            predictor.predict,
            self._executor,
            max_batch_rows=self._defaults.max_batch_rows,
            max_wait=self._defaults.max_batch_wait_ms / 1000,
            max_queue_rows=self._max_queue_rows,
            inline_rows=self._inline_rows,
            observer=self._observer_factory(name, predictor.version),
            label=f"'{name}' version {predictor.version}",
        )
        log.info(
            "model_version_loaded",
            model=name,
            version=predictor.version,
            flavor=version.artifact.format,
            family=predictor.family,
            explains=predictor.explainer is not None,
            bytes=len(data),
        )
        return LoadedVersion(predictor, batcher, dict(version.tags))

    async def _warm(self, predictor: Predictor) -> None:
        """Run the first predictions (lazy initialisation, caches) before clients do.

        A failure is logged, not fatal: the dummy rows hold zeros where the pipeline may
        expect category text, and real rows can still be fine. Broken shapes are caught
        before this, by the signature checks.
        """
        loop = asyncio.get_running_loop()
        try:
            for rows in (1, self._defaults.max_batch_rows):
                await loop.run_in_executor(None, predictor.predict, predictor.warm_matrix(rows))
        except Exception as exc:
            log.warning("warm_up_failed", model=predictor.name, version=predictor.version, error=repr(exc))

    async def _publish(self, model: ServedModel) -> None:
        self._models[model.name] = model
        self._on_change(self._models)
        async with self.changed:
            self.changed.notify_all()

    async def _remove(self, name: str, reason: str) -> None:
        if self._models.pop(name, None) is not None:
            log.info("model_unserved", model=name, reason=reason)
            self._on_change(self._models)
            async with self.changed:
                self.changed.notify_all()
        for key in [k for k in self._cache if k[0] == name]:
            self._cache.pop(key)
            self._recent.pop(key, None)

    def _retire(self, name: str, versions: Iterable[LoadedVersion]) -> None:
        """Keep versions that stopped being served for a quick rollback, up to the limit."""
        for version in versions:
            self._recent[(name, version.number)] = None
        mine = [k for k in self._recent if k[0] == name]
        for key in mine[: max(0, len(mine) - self._retained)]:
            self._recent.pop(key)
            self._cache.pop(key, None)

    async def wait_for(self, predicate: Callable[[Mapping[str, ServedModel]], bool], within: float) -> None:
        """Wait until ``predicate(models)`` holds (tests and start-up use it)."""
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: predicate(self._models))


def earlier_versions(changes: Iterable[registry_pb2.AliasChange], refused: int) -> list[int]:
    """The versions an alias pointed at, newest first (``changes`` newest first), without ``refused``.

    >>> moves = [registry_pb2.AliasChange(version=3, previous_version=2), registry_pb2.AliasChange(version=2)]
    >>> earlier_versions(moves, refused=3)
    [2]
    """
    numbers = [n for change in changes for n in (change.version, change.previous_version)]
    return [n for n in dict.fromkeys(numbers) if n and n != refused]


def parse_version(version: str) -> int:
    """A ``model_version`` string as a version number (decimal, positive)."""
    if not version.isascii() or not version.isdecimal() or int(version) <= 0:
        raise InvalidInput(f"model_version must be a positive decimal version number, got '{shown(version)}'")
    return int(version)
