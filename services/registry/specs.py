"""Training specs: each model's numbered ``ModelSpec`` versions, as the trainer reads them."""

from __future__ import annotations

from services.common.proto.mlops.v1 import events_pb2, model_pb2
from services.registry import validation
from services.registry.changes import Actor, Change, UseCases, resource
from services.registry.errors import InvalidArgument, NotFound
from services.registry.store import Page
from services.registry.store.specs import SpecRepository

ModelSpec = model_pb2.ModelSpec


class SpecUseCases(UseCases):
    async def put_spec(self, actor: Actor, spec: ModelSpec) -> ModelSpec:
        """Store ``spec`` as the model's next spec version."""
        name = spec.model_name
        target = resource("models", name, "specs")
        await self._validated(actor, "PutModelSpec", target, lambda: validation.spec(spec))

        async def work(change: Change) -> ModelSpec:
            found = await change.tx.models.next_spec_version(name, change.now)
            if found is None:
                raise NotFound(f"model {name!r} not found: create it first", field="spec.model_name")
            model = change.owned(name, found)
            number = model.latest_spec_version
            stored = ModelSpec()
            stored.CopyFrom(spec)
            stored.spec_version = number
            await change.tx.specs.insert(stored, created_by=actor.subject, now=change.now)
            await change.audit(
                resource("models", name, "specs", number),
                {"spec_version": number - 1} if number > 1 else None,
                {"spec_version": number, "dataset": spec.dataset, "metric": spec.metric},
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_UPDATED, name)
            return stored

        return await self._change(actor, "PutModelSpec", target, work)

    async def get_spec(self, actor: Actor, name: str, spec_version: int = 0) -> ModelSpec:
        """Spec ``spec_version`` of the model (0: its latest)."""
        validation.model_name(name)
        if spec_version < 0:
            raise InvalidArgument("spec_version: must be >= 1 (or 0 for the latest)", field="spec_version")
        await self._model(actor, name)
        spec = await self._store.specs.get(name, spec_version)
        if spec is None:
            which = f"spec version {spec_version}" if spec_version else "spec"
            raise NotFound(f"model {name!r} has no {which}")
        return spec

    async def list_specs(
        self, actor: Actor, name: str, *, page_size: int = 0, page_token: str = ""
    ) -> Page[ModelSpec]:
        validation.model_name(name)
        request = self._page(SpecRepository.NEWEST_FIRST, page_size, page_token)
        await self._model(actor, name)
        return await self._store.specs.page(name, request)
