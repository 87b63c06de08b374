"""``python -m services.console`` (or ``mlops-console``): run the console until SIGTERM/SIGINT."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.console.settings import ConsoleSettings


def _runner() -> Runner[ConsoleSettings]:
    from services.console.app import run

    return run


def main() -> None:
    serve("console", ConsoleSettings, _runner)


if __name__ == "__main__":
    main()
