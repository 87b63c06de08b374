"""``python -m services.trainer`` (or ``mlops-trainer``): run the trainer until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.trainer.app import run
from services.trainer.settings import TrainerSettings


async def _serve(settings: TrainerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = TrainerSettings()
    except ValidationError as exc:
        sys.stderr.write(f"trainer: invalid settings:\n{exc}\n")
        raise SystemExit(2) from None
    configure_logging("trainer", settings.log_level, settings.log_format)
    get_logger(__name__).info("trainer_starting", http_port=settings.http_port)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
