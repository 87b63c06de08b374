"""``python -m services.trainer`` (or ``mlops-trainer``): run the trainer until SIGTERM/SIGINT."""

from __future__ import annotations

from services.common.entrypoint import Runner, serve
from services.trainer.settings import TrainerSettings


def _runner() -> Runner[TrainerSettings]:
    from services.trainer.app import run

    return run


def main() -> None:
    serve("trainer", TrainerSettings, _runner)


if __name__ == "__main__":
    main()
