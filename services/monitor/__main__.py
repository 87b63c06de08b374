"""``python -m services.monitor`` (or ``mlops-monitor``): run the monitor until SIGTERM/SIGINT."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.monitor.settings import MonitorSettings


def _runner() -> Runner[MonitorSettings]:
    from services.monitor.app import run

    return run


def main() -> None:
    serve("monitor", MonitorSettings, _runner)


if __name__ == "__main__":
    main()
