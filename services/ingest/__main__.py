"""``python -m services.ingest`` (or ``mlops-ingest``): run the ingest until SIGTERM/SIGINT."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.ingest.settings import IngestSettings


def _runner() -> Runner[IngestSettings]:
    from services.ingest.app import run

    return run


def main() -> None:
    serve("ingest", IngestSettings, _runner)


if __name__ == "__main__":
    main()
