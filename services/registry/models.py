"""Models: creating and updating them (name, description, tags, promotion policy), and finding them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry import lifecycle, validation
from services.registry.changes import Actor, Change, UseCases, policy_name, resource
from services.registry.errors import AlreadyExists, InvalidArgument, NotFound
from services.registry.store import Page
from services.registry.store.models import ModelFilter, ModelRepository

Model = registry_pb2.Model


def _check_policy(policy: int) -> None:
    if policy not in registry_pb2.PromotionPolicy.values():
        raise InvalidArgument("promotion_policy: unknown policy", field="promotion_policy")


class ModelUseCases(UseCases):
    async def create_model(
        self,
        actor: Actor,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_AUTO,
    ) -> Model:
        tags = dict(tags or {})
        target = resource("models", name)

        def check() -> None:
            validation.model_name(name, "name")
            validation.text(description, "description")
            validation.tags(tags)
            _check_policy(policy)

        await self._validated(actor, "CreateModel", target, check)

        async def work(change: Change) -> Model:
            if await change.tx.models.exists(name):
                raise AlreadyExists(f"model {name!r} already exists")
            model = await change.tx.models.create(
                name,
                description=description,
                tags=tags,
                policy=lifecycle.effective_policy(policy),
                created_by=actor.subject,
                now=change.now,
            )
            await change.audit(
                target,
                None,
                {
                    "description": description,
                    "tags": tags,
                    "promotion_policy": policy_name(model.promotion_policy),
                },
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_CREATED, name)
            return model

        return await self._change(actor, "CreateModel", target, work)

    async def update_model(
        self,
        actor: Actor,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        remove_tags: Sequence[str] = (),
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_UNSPECIFIED,
    ) -> Model:
        set_tags = dict(set_tags or {})
        target = resource("models", name)

        def check() -> None:
            validation.model_name(name, "name")
            if description is not None:
                validation.text(description, "description")
            validation.tags(set_tags, "set_tags")
            for i, key in enumerate(remove_tags):
                validation.key(key, f"remove_tags[{i}]")
            _check_policy(policy)

        await self._validated(actor, "UpdateModel", target, check)

        async def work(change: Change) -> Model:
            model = await change.model(name)
            before = {
                "description": model.description,
                "tags": dict(sorted(model.tags.items())),
                "promotion_policy": policy_name(model.promotion_policy),
            }
            tags = dict(model.tags)
            tags.update(set_tags)
            for key in remove_tags:
                tags.pop(key, None)
            if len(tags) > validation.MAX_TAGS:
                raise InvalidArgument(
                    f"set_tags: a model has at most {validation.MAX_TAGS} tags", field="set_tags"
                )
            model.tags.clear()
            model.tags.update(tags)
            if description is not None:
                model.description = description
            if policy:
                model.promotion_policy = policy
            await change.tx.models.update(
                name, description=model.description, tags=tags, policy=model.promotion_policy
            )
            after = {
                "description": model.description,
                "tags": dict(sorted(tags.items())),
                "promotion_policy": policy_name(model.promotion_policy),
            }
            await change.audit(target, before, after)
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_UPDATED, name)
            return model

        return await self._change(actor, "UpdateModel", target, work)

    async def get_model(self, name: str) -> Model:
        validation.model_name(name, "name")
        model = await self._store.models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} not found")
        return model

    async def list_models(
        self,
        *,
        alias: str = "",
        name_contains: str = "",
        tags: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Model]:
        if alias:
            validation.alias(alias)
        if name_contains:
            validation.text(name_contains, "name_contains", 128)
        tags = dict(tags or {})
        validation.tags(tags, "tags")
        request = self._page(ModelRepository.BY_NAME, page_size, page_token)
        return await self._store.models.page(ModelFilter(alias, name_contains, tags), request)
