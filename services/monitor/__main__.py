"""``python -m services.monitor`` (or ``mlops-monitor``): run the monitor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.monitor.app import run
from services.monitor.settings import MonitorSettings


async def _serve(settings: MonitorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = MonitorSettings()
    except ValidationError as exc:
        sys.stderr.write(f"monitor: invalid settings:\n{exc}\n")
        raise SystemExit(2) from None
    configure_logging("monitor", settings.log_level, settings.log_format)
    get_logger(__name__).info(
        "monitor_starting", http_port=settings.http_port, group=settings.consumer_group()
    )
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
