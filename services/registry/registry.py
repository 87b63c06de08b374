"""The registry's use cases in one object, shared by the gRPC API, the REST mirror and tests.

Each concern is its own module: :mod:`.models`, :mod:`.versions` (with lineage and
artifacts), :mod:`.aliases` (promotion, approvals, rollback), :mod:`.specs` and
:mod:`.audit`, and :mod:`.runs` (the trainer's jobs, folded from its results); :mod:`.changes` is how every one of them changes things (one transaction
with its audit records and events) and audits refusals. They read and write only through
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
from services.registry.versions import VersionUseCases


class Registry(ModelUseCases, VersionUseCases, AliasUseCases, SpecUseCases, AuditUseCases, RunUseCases):
    """Models, versions, aliases, specs, lineage, the audit log and training runs."""


__all__ = ["Actor", "Page", "Registry"]
