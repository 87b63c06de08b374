"""``python -m services.federation``: the federation service, from its own environment.

    serve --spec SPEC [--once] [--no-first-run]
        Start the SuperLink for SPEC's model. Unless --no-first-run, run a federation at
        once; then (unless --once, or FEDERATION_TRAIN_REQUESTS=false) answer the
        platform's train requests for the model until SIGTERM. --once prints the outcome
        as JSON and exits 0 only if a version was registered.
    budget --noise-multiplier Z --rounds N [--delta D]
        The epsilon N rounds spend, before running any.
    certificates --dir DIR [--host H ...]
        A throwaway CA and SuperLink certificate for a federation on this machine.

``mlops federation start`` runs ``serve`` from .venv-federation; settings are in
services/federation/settings.py (``FEDERATION_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import uuid
from pathlib import Path

from pydantic import ValidationError

from services.federation import privacy, runtime
from services.federation.registration import Trigger
from services.federation.registry import RegistryClient, RegistryError
from services.federation.service import FederationService
from services.federation.settings import FederationSettings
from services.federation.spec import FederationSpec, SpecError

log = logging.getLogger("federation")


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = FederationSettings()
        spec = FederationSpec.from_yaml(Path(args.spec).read_text())
    except ValidationError as exc:
        error = exc.errors()[0]
        where = (
            "FEDERATION_" + "_".join(str(part) for part in error["loc"]).upper()
            if error["loc"]
            else "settings"
        )
        print(f"federation settings: {where}: {error['msg']}", file=sys.stderr)
        return 2
    except (SpecError, OSError) as exc:
        print(f"spec {args.spec}: {exc}", file=sys.stderr)
        return 2
    if spec.privacy.enabled:
        planned = privacy.epsilon(spec.privacy.noise_multiplier, spec.strategy.rounds, spec.privacy.delta)
        if planned > spec.privacy.max_epsilon:
            limit = spec.privacy.max_epsilon
            print(
                f"spec {args.spec}: privacy: epsilon {planned:.2f} over max_epsilon {limit:g}",
                file=sys.stderr,
            )
            return 2
    flower = runtime.Flower(Path(sys.executable).parent)
    registry = RegistryClient(settings.registry_url, settings.token.get_secret_value())
    service = FederationService(settings, spec, flower, registry)
    stop = asyncio.Event()
    try:
        service.start()
    except (runtime.FlowerError, RegistryError) as exc:
        print(f"federation did not start: {exc}", file=sys.stderr)
        service.stop()
        return 3
    log.info("superlink listening on %s for model %s", service.address, spec.model_name)
    try:
        registered = True
        if not args.no_first_run:
            outcome = service.run(
                Trigger(request_id=args.request_id or f"federation-{uuid.uuid4().hex[:12]}")
            )
            print(json.dumps(outcome.to_dict()), flush=True)
            registered = outcome.registered
        if args.once:
            return 0 if registered else 1
        if settings.train_requests:
            from services.federation.requests import RequestListener

            listener = RequestListener(
                bootstrap=settings.kafka_bootstrap_servers,
                topic_prefix=settings.topic_prefix,
                model_name=spec.model_name,
                registry=registry,
                run=service.run,
                workdir=service.workdir,
            )
            asyncio.run(_until_signal(listener.run_forever, stop))
        else:
            asyncio.run(_until_signal(None, stop))
        return 0
    finally:
        service.stop()
        registry.close()


async def _until_signal(work: object, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if callable(work):
        await work(stop)
    else:
        await stop.wait()


def _budget(args: argparse.Namespace) -> int:
    value = privacy.epsilon(args.noise_multiplier, args.rounds, args.delta)
    budget = {"epsilon": value, "delta": args.delta, "rounds": args.rounds}
    print(json.dumps({**budget, "noise_multiplier": args.noise_multiplier, "accountant": privacy.ACCOUNTANT}))
    return 0


def _certificates(args: argparse.Namespace) -> int:
    from services.federation.tls import local_certificates

    paths = local_certificates(Path(args.dir), tuple(args.host or ("127.0.0.1", "localhost")))
    print(json.dumps({"ca": str(paths.ca), "certificate": str(paths.certificate), "key": str(paths.key)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m services.federation", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the federation service for one spec")
    serve.add_argument("--spec", required=True, help="the federation spec (YAML)")
    serve.add_argument("--once", action="store_true", help="run one federation, register, exit")
    serve.add_argument("--no-first-run", action="store_true", help="only answer train requests")
    serve.add_argument("--request-id", default="", help="names the first run in lineage")
    budget = commands.add_parser("budget", help="the epsilon a number of rounds spends")
    budget.add_argument("--noise-multiplier", type=float, required=True)
    budget.add_argument("--rounds", type=int, required=True)
    budget.add_argument("--delta", type=float, default=1e-5)
    certificates = commands.add_parser("certificates", help="a local CA and SuperLink certificate")
    certificates.add_argument("--dir", required=True)
    certificates.add_argument(
        "--host", action="append", help="an IP address or DNS name the certificate is for"
    )
    args = parser.parse_args(argv)
    handlers = {"serve": _serve, "budget": _budget, "certificates": _certificates}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
