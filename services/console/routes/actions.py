"""Changes to models, each in two steps: a page that says what will happen (GET), then the
change itself (POST, with the form's anti-forgery token), whose page shows what the
registry recorded for it.

Approve and reject need the approve scope, promote and roll back the promote scope,
archive the write scope; the registry checks every one (the console only leaves out the
buttons a token does not claim). Moves of an alias are compare-and-set on the version the
confirmation page showed, so a change someone else made meanwhile is refused, not undone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response

from services.common.auth import Scope
from services.common.clients.registry import ModelVersion
from services.common.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PlatformError
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import registry_pb2
from services.console import metrics
from services.console.session import Identity
from services.console.web import Console, ConsoleDep, Form, Person, checked_name, render

router = APIRouter()
log = get_logger(__name__)

PRODUCTION = "production"
MAX_TEXT = 2000
SCOPES = {
    "approve": Scope.APPROVE,
    "reject": Scope.APPROVE,
    "promote": Scope.PROMOTE,
    "rollback": Scope.PROMOTE,
    "archive": Scope.WRITE,
}
VERSION_ACTIONS = ("approve", "reject", "promote", "archive")
SHOWN_ON_THE_PAGE = (Conflict, InvalidArgument, FailedPrecondition)
"""Refusals the result page explains (someone moved first, bad input, the wrong state);
others (no permission, the registry away) are the error page's."""
S = registry_pb2


def offered(
    aliases: Mapping[str, int], version: ModelVersion, identity: Identity, team: str = ""
) -> list[str]:
    """The actions a version's page offers: those its state allows and the token claims (in
    the model's ``team``, when given).

    >>> pending = registry_pb2.ModelVersion(version=3, status=registry_pb2.VERSION_STATUS_PENDING_APPROVAL)
    >>> offered({"production": 2}, pending, Identity("ana", frozenset({"read", "approve"}), None))
    ['approve', 'reject']
    >>> live = registry_pb2.ModelVersion(version=2, status=registry_pb2.VERSION_STATUS_APPROVED)
    >>> offered({"production": 2}, live, Identity("root", frozenset({"admin"}), None))
    ['rollback']
    """
    status = version.status
    on_aliases = version.version in aliases.values()
    candidates = []
    if status == S.VERSION_STATUS_PENDING_APPROVAL:
        candidates += ["approve", "reject"]
    if (
        status in (S.VERSION_STATUS_READY, S.VERSION_STATUS_APPROVED)
        and aliases.get(PRODUCTION) != version.version
    ):
        candidates.append("promote")
    if aliases.get(PRODUCTION) == version.version:
        candidates.append("rollback")
    if status != S.VERSION_STATUS_ARCHIVED and not on_aliases:
        candidates.append("archive")
    return [action for action in candidates if identity.may(SCOPES[action], team)]


def _count(action: str, error: PlatformError | None, who: Identity, name: str, request_id: str) -> None:
    outcome = "ok" if error is None else error.kind.label
    metrics.ACTIONS.labels(action, outcome).inc()
    log.info(
        "console_action",
        action=action,
        model=name,
        subject=who.subject,
        outcome=outcome,
        request_id=request_id,
    )


def _text(form: Mapping[str, str], field: str) -> str:
    value = form.get(field, "").strip()
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field}: at most {MAX_TEXT} characters", field=field)
    return value


def _alias(form_or_query: Mapping[str, str]) -> str:
    alias = form_or_query.get("alias", PRODUCTION).strip() or PRODUCTION
    if len(alias) > 128:
        raise InvalidArgument("alias: at most 128 characters", field="alias")
    return alias


def _expected(form: Mapping[str, str]) -> int:
    try:
        return int(form.get("expected_version", "0"))
    except ValueError:
        raise InvalidArgument("expected_version: not a number", field="expected_version") from None


async def _previous_of(console: Console, name: str, alias: str) -> int:
    """Where a rollback would move ``alias`` (the version before its current one), as far
    as its history says; 0 when it does not."""
    for change in await console.registry.alias_history(name, alias, limit=20):
        if change.version:
            return int(change.previous_version)
    return 0


@router.get("/models/{name}/versions/{version}/{action}", include_in_schema=False)
async def confirm_version_action(
    request: Request, name: str, version: int, action: str, console: ConsoleDep, who: Person
) -> Response:
    if action not in VERSION_ACTIONS:
        raise NotFound(f"no page {action[:40]!r} for a version")
    model = await console.registry.get_model(checked_name(name))
    found = await console.registry.get_version(name, version)
    alias = _alias(request.query_params)
    return render(
        request,
        "confirm.html",
        {
            "action": action,
            "model": model,
            "version": found,
            "alias": alias,
            "current": model.aliases.get(alias if action == "promote" else PRODUCTION, 0),
            "scope": SCOPES[action].value,
        },
    )


@router.get("/models/{name}/rollback", include_in_schema=False)
async def confirm_rollback(request: Request, name: str, console: ConsoleDep, who: Person) -> Response:
    model = await console.registry.get_model(checked_name(name))
    alias = _alias(request.query_params)
    current = model.aliases.get(alias, 0)
    if not current:
        raise FailedPrecondition(f"{name} has no {alias!r} alias to roll back", field="alias")
    return render(
        request,
        "confirm.html",
        {
            "action": "rollback",
            "model": model,
            "version": None,
            "alias": alias,
            "current": current,
            "previous": await _previous_of(console, name, alias),
            "scope": SCOPES["rollback"].value,
        },
    )


async def _recorded(console: Console, who: Identity, name: str, request_id: str) -> dict[str, Any]:
    """What the registry recorded for the request: its audit records (admin scope), else the
    alias moves it made (read scope)."""
    if who.may(Scope.ADMIN):
        return {"audit": await console.registry.audit_of_request(request_id)}
    moves = [c for c in await console.registry.alias_history(name, limit=20) if c.request_id == request_id]
    return {"moves": moves}


async def _outcome(
    request: Request, console: Console, who: Identity, name: str, action: str, request_id: str, **context: Any
) -> Response:
    return render(
        request,
        "action_result.html",
        {
            "action": action,
            "name": name,
            "request_id": request_id,
            "model": await console.registry.get_model(name),
            **context,
            **await _recorded(console, who, name, request_id),
        },
    )


@router.post("/models/{name}/versions/{version}/{action}", include_in_schema=False)
async def version_action(
    request: Request, name: str, version: int, action: str, console: ConsoleDep, who: Person, form: Form
) -> Response:
    if action not in VERSION_ACTIONS:
        raise NotFound(f"no action {action[:40]!r} on a version")
    checked_name(name)
    registry = console.registry
    request_id = uuid.uuid4().hex
    changed: ModelVersion | None = None
    try:
        if action == "approve":
            changed = await registry.approve(name, version, _text(form, "comment"), request_id=request_id)
        elif action == "reject":
            comment = _text(form, "comment")
            if not comment:
                raise InvalidArgument("comment: say why the version is rejected", field="comment")
            changed = await registry.reject(name, version, comment, request_id=request_id)
        elif action == "promote":
            await registry.set_alias(
                name,
                _alias(form),
                version,
                expected_version=_expected(form),
                reason=_text(form, "reason"),
                request_id=request_id,
            )
        else:
            changed = await registry.archive(name, version, _text(form, "reason"), request_id=request_id)
    except PlatformError as exc:
        _count(action, exc, who.identity, name, request_id)
        if not isinstance(exc, SHOWN_ON_THE_PAGE):
            raise
        return await _outcome(request, console, who.identity, name, action, request_id, refused=exc)
    _count(action, None, who.identity, name, request_id)
    if changed is None:
        changed = await registry.get_version(name, version)
    return await _outcome(request, console, who.identity, name, action, request_id, version=changed)


@router.post("/models/{name}/rollback", include_in_schema=False)
async def rollback(request: Request, name: str, console: ConsoleDep, who: Person, form: Form) -> Response:
    checked_name(name)
    request_id = uuid.uuid4().hex
    try:
        result = await console.registry.rollback(
            name,
            _alias(form),
            expected_version=_expected(form),
            reason=_text(form, "reason"),
            request_id=request_id,
        )
    except PlatformError as exc:
        _count("rollback", exc, who.identity, name, request_id)
        if not isinstance(exc, SHOWN_ON_THE_PAGE):
            raise
        return await _outcome(request, console, who.identity, name, "rollback", request_id, refused=exc)
    _count("rollback", None, who.identity, name, request_id)
    return await _outcome(request, console, who.identity, name, "rollback", request_id, rollback=result)
