"""``python -m services.registry`` (or ``mlops-registry``): run the registry until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.registry.app import run
from services.registry.settings import RegistrySettings


async def _serve(settings: RegistrySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = RegistrySettings()
    except ValidationError as exc:
        # Name the fields, never echo the values: they may hold credentials.
        problems = "".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}\n" for e in exc.errors())
        sys.stderr.write(f"registry: invalid settings:\n{problems}")
        raise SystemExit(2) from None
    configure_logging("registry", settings.log_level, settings.log_format)
    get_logger(__name__).info("registry_starting", grpc_port=settings.grpc_port, http_port=settings.http_port)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
