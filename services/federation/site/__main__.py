"""``python -m services.federation.site``: the site agent a site runs next to its data.

    run --server HOST:PORT --name NAME --data FILE [--holdout] [--allow-plain-updates]
        [--root-certificates CA | --insecure] [--clientapp-port PORT]
        Become the site's Flower SuperNode: connect to the federation's SuperLink and train
        or evaluate on FILE (CSV with a header) whenever a run asks. The rows never leave
        this machine; parameter arrays do (masked, under secure aggregation).
    check --data FILE --spec SPEC
        Whether FILE can take part in SPEC's federation: rows, classes seen, or the problem.

Without ``--root-certificates`` the agent refuses to connect unless ``--insecure`` says it
should: a site's updates travel over TLS by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from services.federation import protocol, runtime
from services.federation.site.data import DataError, load
from services.federation.spec import FederationSpec, SpecError


def _run(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    if not data.is_file():
        print(f"--data {args.data}: no such file", file=sys.stderr)
        return 2
    if args.root_certificates is None and not args.insecure:
        print(
            "give --root-certificates (the federation's CA), or --insecure to connect without TLS",
            file=sys.stderr,
        )
        return 2
    flower = runtime.Flower(Path(sys.executable).parent)
    node_config: dict[str, str | bool | int] = {
        protocol.NODE_SITE: args.name,
        protocol.NODE_DATA: str(data),
        protocol.NODE_ROLE: protocol.HOLDOUT_ROLE if args.holdout else protocol.TRAIN_ROLE,
        protocol.NODE_PLAIN: bool(args.allow_plain_updates),
    }
    command = flower.supernode(
        args.server,
        args.clientapp_port,
        node_config,
        Path(args.root_certificates).resolve() if args.root_certificates else None,
    )
    home = Path(args.workdir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    # The agent becomes the SuperNode: signals reach it directly, and its exit status is ours.
    os.execve(command[0], command, flower.env(home))
    return 1  # not reached


def _check(args: argparse.Namespace) -> int:
    try:
        spec = FederationSpec.from_yaml(Path(args.spec).read_text())
        site = load(Path(args.data), spec.features, spec.target, spec.classes, spec.eval_fraction, spec.seed)
    except (SpecError, DataError, OSError) as exc:
        print(json.dumps({"usable": False, "problem": f"{type(exc).__name__}: {exc}"}))
        return 1
    classes = Counter(str(c) for c in (*site.train.y, *site.evaluation.y))
    print(
        json.dumps(
            {
                "usable": True,
                "train_rows": len(site.train),
                "eval_rows": len(site.evaluation),
                "classes": {c: classes.get(c, 0) for c in spec.classes},
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.federation.site", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="connect to the federation and take part in its runs")
    run.add_argument("--server", required=True, help="the federation's SuperLink, HOST:PORT")
    run.add_argument("--name", required=True, help="this site's name, as lineage will record it")
    run.add_argument("--data", required=True, help="the site's rows: CSV with a header")
    run.add_argument("--holdout", action="store_true", help="evaluate every global model, train none")
    run.add_argument(
        "--allow-plain-updates", action="store_true", help="also train in runs without secure aggregation"
    )
    run.add_argument("--root-certificates", help="the CA certificate the SuperLink's is signed by (PEM)")
    run.add_argument("--insecure", action="store_true", help="connect without TLS (loopback only)")
    run.add_argument("--clientapp-port", type=int, default=9094, help="local port for Flower's ClientApp API")
    run.add_argument("--workdir", default=".mlops/site", help="Flower's state for this agent")
    check = commands.add_parser("check", help="can this file take part in this spec's federation?")
    check.add_argument("--data", required=True)
    check.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _check(args)


if __name__ == "__main__":
    sys.exit(main())
