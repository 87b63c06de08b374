"""The registry's use cases in one object, shared by the gRPC API, the REST mirror and tests.

Each concern is its own module: :mod:`.models`, :mod:`.versions` (with lineage and
artifacts), :mod:`.aliases` (promotion, approvals, rollback), :mod:`.specs`,
:mod:`.audit`, :mod:`.runs` (the trainer's jobs, folded from its results), :mod:`.teams`
and :mod:`.tokens` (the platform's token issuer); :mod:`.changes` is how every one of them
changes things (one transaction with its audit records and events) and audits refusals, and
:mod:`.access` who may do what. They read and write only through
the store layer (:mod:`services.registry.store`), and raise platform errors
(:mod:`services.registry.errors`) that each adapter translates.
"""

from __future__ import annotations

from services.registry.aliases import AliasUseCases
from services.registry.audit import AuditUseCases
from services.registry.changes import Actor
from services.registry.models import ModelUseCases
from services.registry.runs import RunUseCases
from services.registry.specs import SpecUseCases
from services.registry.store import Page
from services.registry.teams import TeamUseCases
from services.registry.tokens import TokenUseCases
from services.registry.versions import VersionUseCases


class Registry(
    ModelUseCases,
    VersionUseCases,
    AliasUseCases,
    SpecUseCases,
    AuditUseCases,
    RunUseCases,
    TeamUseCases,
    TokenUseCases,
):
    """Models, versions, aliases, specs, lineage, the audit log, training runs, teams and tokens."""


__all__ = ["Actor", "Page", "Registry"]
