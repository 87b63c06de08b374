"""The registry's use cases in one object, shared by the gRPC API, the REST mirror and tests.

Each concern is its own module: :mod:`.models`, :mod:`.versions` (with lineage and
artifacts), :mod:`.aliases` (promotion, approvals, rollback), :mod:`.specs` and
:mod:`.audit`; :mod:`.changes` is how every one of them changes things (one transaction
with its audit records and events) and audits refusals. They read and write only through
the store layer (:mod:`services.registry.store`), and raise platform errors
(:mod:`services.registry.errors`) that each adapter translates.
"""

from __future__ import annotations

from services.registry.aliases import AliasUseCases
from services.registry.audit import AuditUseCases
from services.registry.changes import Actor
from services.registry.models import ModelUseCases
from services.registry.specs import SpecUseCases
from services.registry.store import Page
from services.registry.versions import VersionUseCases


class Registry(ModelUseCases, VersionUseCases, AliasUseCases, SpecUseCases, AuditUseCases):
    """Models, versions, aliases, specs, lineage and the audit log."""


__all__ = ["Actor", "Page", "Registry"]
