"""``python -m services.serving`` (or ``mlops-serving``): run the serving until SIGTERM/SIGINT.

Run it with ``OMP_NUM_THREADS=1`` (the local stack and the images do): see ServingSettings."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.serving.settings import ServingSettings


def _runner() -> Runner[ServingSettings]:
    from services.serving.workers import run

    return run


def main() -> None:
    serve("serving", ServingSettings, _runner)


if __name__ == "__main__":
    main()
