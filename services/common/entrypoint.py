"""How every service process starts and stops: ``python -m services.<name>``.

Settings are read first, and a bad one ends the process with exit code 2 and a message
naming the field but never its value (values may be keys or connection strings). Then
logging and tracing are configured, the service runs until SIGTERM or SIGINT, stops in
order, the spans still buffered are exported, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from services.common.logging import configure_logging, get_logger
from services.common.settings import PlatformSettings

S = TypeVar("S", bound=PlatformSettings)
Runner = Callable[[S, asyncio.Event], Awaitable[None]]


def load_settings(name: str, settings_class: type[S]) -> S:
    """The service's settings, or exit 2 naming each bad field (without its value)."""
    try:
        return settings_class()
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False, include_context=False)
        lines = "".join(f"  {'.'.join(map(str, p['loc']))}: {p['msg']}\n" for p in problems)
        sys.stderr.write(f"{name}: invalid settings:\n{lines}")
        raise SystemExit(2) from None


def serve(name: str, settings_class: type[S], runner: Callable[[], Runner[S]]) -> None:
    """Run a service until SIGTERM or SIGINT.

    ``runner`` returns the service's ``run(settings, stop)``; it is called only once the
    settings are known to be good, so a misconfigured replica fails before it imports
    scikit-learn or gRPC.
    """
    settings = load_settings(name, settings_class)
    run_service(name, settings, runner())


def run_service(name: str, settings: S, run: Runner[S]) -> None:
    """Configure logging and tracing, then ``run`` until SIGTERM or SIGINT (a service's worker
    processes start here with the settings their parent read)."""
    configure_logging(name, settings.log_level, settings.log_format)
    get_logger(name).info(f"{name}_starting")
    # Imported once the settings are good, like the service itself: tracing loads gRPC.
    from services.common.tracing import configure_tracing, shutdown_tracing

    configure_tracing(name, settings.code_version)
    try:
        asyncio.run(_run_until_signalled(settings, run))
    finally:
        shutdown_tracing()


async def _run_until_signalled(settings: S, run: Runner[S]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)
