"""``python -m services.registry.keys`` (or ``mlops keys``): the artifact key-encryption keys,
for operators.

``status`` counts the artifacts each key id wraps; ``rotate`` re-wraps every data key by
the active key (``REGISTRY_ARTIFACT_KEY_ID``), leaving the artifacts' bytes as they are.
Both read the registry's own settings (``REGISTRY_*``, ``MLOPS_*``) and talk to its
database, so run them where a registry runs (a one-off container, a Kubernetes Job).
The procedure is in docs/security.md::

    REGISTRY_ARTIFACT_KEYS='{"2026-11":"...","2027-01":"..."}' REGISTRY_ARTIFACT_KEY_ID=2027-01 \\
        mlops keys rotate          # or: python -m services.registry.keys rotate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from services.common.entrypoint import load_settings
from services.registry.settings import RegistrySettings
from services.registry.store import Store
from services.registry.store.artifacts import KeyUsage
from services.registry.store.encryption import KeyRing


async def rotate(settings: RegistrySettings) -> tuple[int, KeyUsage]:
    """Re-wrap every artifact's data key by the active key; (how many were, usage after)."""
    store = Store.open(settings)
    try:
        rewrapped = 0
        while True:  # until a pass finds nothing left: a concurrent upload may land meanwhile
            done = await store.artifacts.rewrap()
            rewrapped += done
            if done == 0:
                return rewrapped, await store.artifacts.key_usage()
    finally:
        await store.close()


async def status(settings: RegistrySettings) -> KeyUsage:
    store = Store.open(settings)
    try:
        return await store.artifacts.key_usage()
    finally:
        await store.close()


def _counts(usage: KeyUsage) -> dict[str, int]:
    return {key_id or "unencrypted": count for key_id, count in sorted(usage.by_key_id.items(), key=str)}


def run(command: str, settings: RegistrySettings) -> dict[str, object]:
    """``status`` or ``rotate`` against the registry's database; what it found, as JSON."""
    if command == "rotate":
        rewrapped, usage = asyncio.run(rotate(settings))
        ring = KeyRing.from_settings(settings.artifact_keys, settings.artifact_key_id)
        active = ring.active if ring is not None else None
        return {"rewrapped": rewrapped, "active_key_id": active, "artifacts": _counts(usage)}
    return {"artifacts": _counts(asyncio.run(status(settings)))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.registry.keys", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["status", "rotate"])
    args = parser.parse_args(argv)
    json.dump(run(args.command, load_settings("registry", RegistrySettings)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
