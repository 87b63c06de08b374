"""``python -m services.registry`` (or ``mlops-registry``): run the registry until SIGTERM/SIGINT."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.registry.settings import RegistrySettings


def _runner() -> Runner[RegistrySettings]:
    from services.registry.app import run

    return run


def main() -> None:
    serve("registry", RegistrySettings, _runner)


if __name__ == "__main__":
    main()
