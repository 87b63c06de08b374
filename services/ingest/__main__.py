"""``python -m services.ingest`` (or ``mlops-ingest``): run ingest until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.ingest.app import run
from services.ingest.settings import IngestSettings


async def _serve(settings: IngestSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        # Without the inputs: a rejected value may be a key or a connection string.
        problems = exc.errors(include_input=False, include_url=False)
        lines = "".join(f"  {'.'.join(map(str, p['loc']))}: {p['msg']}\n" for p in problems)
        sys.stderr.write(f"ingest: invalid settings:\n{lines}")
        raise SystemExit(2) from None
    configure_logging("ingest", settings.log_level, settings.log_format)
    get_logger(__name__).info("ingest_starting", grpc_port=settings.grpc_port, http_port=settings.http_port)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
