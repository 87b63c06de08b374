"""tritonclient's HTTP client against serving's HTTP port, with the client's defaults.

By default tritonclient.http sends every input as binary data after the JSON header
(``binary_data_size``, ``Inference-Header-Content-Length``) and asks for binary outputs;
these checks use those defaults, then JSON inputs and outputs, then a mix, the way its
users call it. Runs from the client environment (``make client-venv``); no platform code
is imported. ``--case`` is the same JSON file as ``triton_conformance.py`` reads. Prints one
JSON line per check and exits 0 only if all pass.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from triton_conformance import arguments, expect, run_checks  # type: ignore[import-not-found]
from tritonclient.utils import InferenceServerException


def main() -> int:
    url, token, case = arguments(__doc__.splitlines()[0], "HTTP")
    model, version = case["model"], case["version"]
    rows = np.array(case["rows"], dtype=np.float64)
    probabilities = np.array(case["probabilities"])
    labels = case["labels"]
    authorization = {"authorization": f"Bearer {token}"}
    client = httpclient.InferenceServerClient(url=url)

    def headers() -> dict[str, str]:
        # A fresh dict per call: tritonclient writes Inference-Header-Content-Length into
        # the dict it is given, and a stale one would cut the next JSON-only request short.
        return dict(authorization)

    def features(data: np.ndarray, datatype: str = "FP64", binary: bool = True) -> httpclient.InferInput:
        tensor = httpclient.InferInput("features", list(data.shape), datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        return tensor

    def binary_defaults() -> list[str]:
        # Inputs in binary and no outputs named: the client asks for every output in binary.
        result = client.infer(model, [features(rows)], request_id="http-1", headers=headers())
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities)
        got = [v.decode() for v in result.as_numpy("label").ravel()]
        expect(got == labels, f"labels {got} != {labels}")
        response = result.get_response()
        expect(response["id"] == "http-1", f"id {response['id']!r}")
        expect(response["model_version"] == version, f"model_version {response['model_version']!r}")
        sizes = [o.get("parameters", {}).get("binary_data_size") for o in response["outputs"]]
        expect(all(isinstance(size, int) and size > 0 for size in sizes), f"outputs not binary: {response}")
        return [o["name"] for o in response["outputs"]]

    def json_both_ways() -> str:
        result = client.infer(
            model,
            [features(rows, binary=False)],
            model_version=version,
            outputs=[
                httpclient.InferRequestedOutput("probabilities", binary_data=False),
                httpclient.InferRequestedOutput("label", binary_data=False),
            ],
            headers=headers(),
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities)
        expect("data" in result.get_output("label"), "label not in JSON")
        return "ok"

    def mixed() -> str:
        # FP32 in binary, probabilities in binary, the label as JSON, per-feature tensors too.
        inputs = []
        for i, name in enumerate(case["feature_names"]):
            tensor = httpclient.InferInput(name, [len(rows)], "FP32")
            tensor.set_data_from_numpy(
                np.ascontiguousarray(rows[:, i]).astype(np.float32), binary_data=i % 2 == 0
            )
            inputs.append(tensor)
        result = client.infer(
            model,
            inputs,
            outputs=[
                httpclient.InferRequestedOutput("probabilities", binary_data=True),
                httpclient.InferRequestedOutput("label", binary_data=False),
            ],
            headers=headers(),
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-4, atol=1e-6)
        expect("data" in result.get_output("label"), "label not in JSON")
        expect("data" not in result.get_output("probabilities"), "probabilities not binary")
        return "ok"

    def explained_in_binary() -> list[int]:
        result = client.infer(model, [features(rows)], parameters={"explain": True}, headers=headers())
        contributions = result.as_numpy("contributions")
        total = contributions.sum(axis=1) + result.as_numpy("contributions_base")
        np.testing.assert_allclose(total, np.array(case["log_odds"]), atol=1e-9)
        return list(contributions.shape)

    def refusal_names_the_input() -> str:
        try:
            client.infer(model, [features(rows[:, :-1])], headers=headers())
        except InferenceServerException as exc:
            expect("features" in (exc.message() or ""), f"message {exc.message()!r}")
            return exc.message() or ""
        raise AssertionError("a tensor of the wrong shape was accepted")

    def ready() -> bool:
        expect(client.is_server_live(), "not live")
        expect(client.is_model_ready(model, headers=headers()), "model not ready")
        return True

    checks: list[tuple[str, Any]] = [
        ("http_ready", ready),
        ("http_binary_defaults", binary_defaults),
        ("http_json_both_ways", json_both_ways),
        ("http_mixed", mixed),
        ("http_explained_in_binary", explained_in_binary),
        ("http_refusal_names_the_input", refusal_names_the_input),
    ]
    failed = run_checks(checks)
    client.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
