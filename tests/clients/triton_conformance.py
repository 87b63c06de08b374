"""Conformance of serving with NVIDIA's tritonclient (gRPC), as a client written by someone else.

Runs from its own virtual environment (``make client-venv``: tritonclient pins protobuf < 7,
the platform uses 7), against a running serving on ``--url``, and exercises every RPC of
``inference.GRPCInferenceService`` with the sync and the asyncio client, the way their
users call them: no platform code is imported here.

``--case`` is a JSON file written by the test that runs this script: the model name and
version, the served feature matrix's rows, the probabilities and labels the model gives
them, and the log-odds its feature contributions must add up to. The script prints one JSON line per check and exits 0 only if all pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

Check = Callable[[], Any]


def run_checks(checks: list[tuple[str, Check]]) -> int:
    failed = 0
    for name, check in checks:
        try:
            detail = check()
            print(json.dumps({"check": name, "ok": True, "detail": detail}), flush=True)
        except Exception as exc:
            failed += 1
            print(
                json.dumps({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}),
                flush=True,
            )
            traceback.print_exc(file=sys.stderr)
    return failed


def arguments(description: str, transport: str) -> tuple[str, str, dict[str, Any]]:
    """(url, token, case) from the command line every conformance script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help=f"serving's {transport} host:port")
    parser.add_argument("--token", required=True, help="a token with the predict scope")
    parser.add_argument(
        "--case", required=True, help="JSON file: model, version, rows, probabilities, labels"
    )
    args = parser.parse_args()
    with open(args.case) as file:
        return args.url, args.token, json.load(file)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_status(call: Check, status: str, phrase: str = "") -> str:
    """``call`` must fail with gRPC ``status`` (and a message containing ``phrase``)."""
    try:
        call()
    except InferenceServerException as exc:
        expect(
            exc.status() == f"StatusCode.{status}", f"expected {status}, got {exc.status()}: {exc.message()}"
        )
        expect(phrase in (exc.message() or ""), f"message {exc.message()!r} lacks {phrase!r}")
        return str(exc.message())
    raise AssertionError(f"expected {status}, the call succeeded")


def main() -> int:
    url, token, case = arguments(__doc__.splitlines()[0], "gRPC")
    model, version = case["model"], case["version"]
    rows = np.array(case["rows"], dtype=np.float64)
    probabilities = np.array(case["probabilities"])
    labels = case["labels"]
    headers = {"authorization": f"Bearer {token}"}
    client = grpcclient.InferenceServerClient(url=url)

    def features(data: np.ndarray, datatype: str = "FP64") -> grpcclient.InferInput:
        tensor = grpcclient.InferInput("features", list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        return tensor

    def infer_answers() -> dict[str, Any]:
        result = client.infer(
            model,
            [features(rows)],
            model_version=version,
            outputs=[
                grpcclient.InferRequestedOutput("probabilities"),
                grpcclient.InferRequestedOutput("label"),
            ],
            request_id="conformance-1",
            headers=headers,
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities)
        got = [v.decode() for v in result.as_numpy("label").ravel()]
        expect(got == labels, f"labels {got} != {labels}")
        response = result.get_response()
        expect(response.id == "conformance-1", f"id {response.id!r}")
        expect(response.model_version == version, f"model_version {response.model_version!r}")
        return {"outputs": [o.name for o in response.outputs]}

    def infer_defaults() -> list[str]:
        result = client.infer(model, [features(rows.astype(np.float32), "FP32")], headers=headers)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-4, atol=1e-6)
        names = [o.name for o in result.get_response().outputs]
        expect(names == ["probabilities", "label"], f"outputs {names}")
        return names

    def infer_one_output_by_alias() -> str:
        result = client.infer(
            model,
            [features(rows)],
            outputs=[grpcclient.InferRequestedOutput("label")],
            parameters={"alias": "production"},
            headers=headers,
        )
        expect(result.as_numpy("probabilities") is None, "probabilities returned though not requested")
        return str(result.get_response().model_version)

    def infer_per_feature_tensors() -> str:
        inputs = []
        for i, name in enumerate(case["feature_names"]):
            tensor = grpcclient.InferInput(name, [len(rows)], "FP64")
            tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
            inputs.append(tensor)
        result = client.infer(model, inputs, headers=headers)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities)
        return "ok"

    def metadata() -> dict[str, Any]:
        meta: dict[str, Any] = client.get_model_metadata(model, headers=headers, as_json=True)
        expect(version in meta["versions"], f"versions {meta['versions']}")
        inputs = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]]
        expect(inputs == [("features", "FP64", [-1, rows.shape[1]])], f"inputs {inputs}")
        outputs = [(t["name"], t["datatype"]) for t in meta["outputs"]]
        expected = [
            ("probabilities", "FP64"),
            ("label", "BYTES"),
            ("contributions", "FP64"),
            ("contributions_base", "FP64"),
        ]
        expect(outputs == expected, f"outputs {outputs}")
        return meta

    def infer_explained() -> list[int]:
        result = client.infer(model, [features(rows)], parameters={"explain": True}, headers=headers)
        contributions = result.as_numpy("contributions")
        expect(contributions.shape == rows.shape, f"contributions shape {contributions.shape}")
        total = contributions.sum(axis=1) + result.as_numpy("contributions_base")
        np.testing.assert_allclose(total, np.array(case["log_odds"]), atol=1e-9)
        return list(contributions.shape)

    def repository_index() -> list[dict[str, Any]]:
        answer = client.get_model_repository_index(headers=headers, as_json=True)
        index: list[dict[str, Any]] = answer["models"]
        entry = next(m for m in index if m["name"] == model)
        expect(entry["state"] == "READY" and entry["version"] == version, f"entry {entry}")
        return index

    def server_metadata() -> dict[str, Any]:
        meta: dict[str, Any] = client.get_server_metadata(headers=headers, as_json=True)
        expect("model_repository" in meta.get("extensions", []), f"extensions {meta}")
        return meta

    def async_client() -> str:
        async def go() -> str:
            async with aioclient.InferenceServerClient(url=url) as aio:
                expect(await aio.is_server_live(), "not live")
                expect(await aio.is_model_ready(model, headers=headers), "model not ready")
                tensor = aioclient.InferInput("features", list(rows.shape), "FP64")
                tensor.set_data_from_numpy(rows)
                result = await aio.infer(model, [tensor], headers=headers)
                np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities)
                return str(result.get_response().model_version)

        return asyncio.run(go())

    checks: list[tuple[str, Check]] = [
        ("ServerLive (no token)", lambda: expect(client.is_server_live(), "not live")),
        ("ServerReady (no token)", lambda: expect(client.is_server_ready(), "not ready")),
        ("ModelReady", lambda: expect(client.is_model_ready(model, headers=headers), "not ready")),
        (
            "ModelReady by version",
            lambda: expect(client.is_model_ready(model, version, headers=headers), "no"),
        ),
        (
            "ModelReady unknown",
            lambda: expect(not client.is_model_ready("no-such-model", headers=headers), "yes"),
        ),
        ("ServerMetadata", server_metadata),
        ("ModelMetadata", metadata),
        ("RepositoryIndex", repository_index),
        ("ModelInfer with version, id and requested outputs", infer_answers),
        ("ModelInfer FP32 with default outputs", infer_defaults),
        ("ModelInfer one output, alias parameter", infer_one_output_by_alias),
        ("ModelInfer one tensor per feature", infer_per_feature_tensors),
        ("ModelInfer with the explain parameter", infer_explained),
        ("asyncio client", async_client),
        (
            "unknown model is NOT_FOUND",
            lambda: expect_status(
                lambda: client.infer("no-such-model", [features(rows)], headers=headers), "NOT_FOUND"
            ),
        ),
        (
            "unknown version is NOT_FOUND",
            lambda: expect_status(
                lambda: client.infer(model, [features(rows)], model_version="999", headers=headers),
                "NOT_FOUND",
            ),
        ),
        (
            "wrong shape is INVALID_ARGUMENT",
            lambda: expect_status(
                lambda: client.infer(model, [features(rows[:, :-1])], headers=headers),
                "INVALID_ARGUMENT",
                "expected shape",
            ),
        ),
        (
            "NaN is INVALID_ARGUMENT",
            lambda: expect_status(
                lambda: client.infer(model, [features(np.full_like(rows, np.nan))], headers=headers),
                "INVALID_ARGUMENT",
                "NaN",
            ),
        ),
        (
            "no token is UNAUTHENTICATED",
            lambda: expect_status(lambda: client.infer(model, [features(rows)]), "UNAUTHENTICATED"),
        ),
    ]
    failed = run_checks(checks)
    client.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
