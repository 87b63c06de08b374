"""tritonclient with ``ssl=True`` against serving on a TLS stack (``mlops up --tls``), as a
client written by someone else: run from its own environment (``make client-venv``).

Prints one JSON line per check and exits 0 only if all pass: the sync and the asyncio
client reach the server with the stack's CA, and both are refused without it (the
system's roots do not know a private CA) and over plaintext.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException


def check(name: str, run: Callable[[], Any]) -> bool:
    try:
        detail = run()
    except Exception as exc:
        print(json.dumps({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return False
    print(json.dumps({"check": name, "ok": True, "detail": detail}), flush=True)
    return True


def refused(call: Callable[[], Any]) -> str:
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status())
    raise AssertionError("the server answered")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="serving's gRPC host:port")
    parser.add_argument("--token", required=True, help="a token with the predict scope")
    parser.add_argument("--ca", required=True, help="the stack's CA certificate")
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.token}"}

    def live_with_ca() -> bool:
        client = grpcclient.InferenceServerClient(url=args.url, ssl=True, root_certificates=args.ca)
        live = client.is_server_live(headers=headers)
        assert live, "not live"
        return bool(client.get_server_metadata(headers=headers).name)

    async def aio_live() -> bool:
        async with aioclient.InferenceServerClient(
            url=args.url, ssl=True, root_certificates=args.ca
        ) as client:
            return bool(await client.is_server_ready(headers=headers))

    results = [
        check("sync ssl=True with the stack's CA", live_with_ca),
        check("asyncio ssl=True with the stack's CA", lambda: asyncio.run(aio_live())),
        check(
            "ssl=True without the CA is refused",
            lambda: refused(
                lambda: grpcclient.InferenceServerClient(url=args.url, ssl=True).is_server_live(
                    headers=headers, client_timeout=5
                )
            ),
        ),
        check(
            "plaintext is refused",
            lambda: refused(
                lambda: grpcclient.InferenceServerClient(url=args.url).is_server_live(
                    headers=headers, client_timeout=5
                )
            ),
        ),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
