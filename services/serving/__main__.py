"""``python -m services.serving`` (or ``mlops-serving``): run serving until SIGTERM/SIGINT.

Run it with ``OMP_NUM_THREADS=1`` (the local stack and the images do): see ServingSettings.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.serving.settings import ServingSettings


async def _serve(settings: ServingSettings) -> None:
    # Imported once the settings are known to be good: a misconfigured replica fails in
    # a fraction of a second instead of after loading scikit-learn and gRPC.
    from services.serving.app import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = ServingSettings()
    except ValidationError as exc:
        sys.stderr.write(f"serving: invalid settings:\n{exc}\n")
        raise SystemExit(2) from None
    configure_logging("serving", settings.log_level, settings.log_format)
    get_logger(__name__).info("serving_starting", grpc_port=settings.grpc_port, http_port=settings.http_port)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
