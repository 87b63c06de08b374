"""NVIDIA's tritonclient, from its own virtual environment, asking serving for answers.

What a team that brought its own model would run: for each model in ``--case`` (a JSON list
of ``{"model", "rows", "explain"}``), one ``ModelInfer`` with the platform's ``features``
matrix (FP64), one with ``explain`` set, and ``ModelMetadata``. It prints one JSON line per
model with what it got (probabilities, labels, contributions and their base, the platform
and version), or the error the server answered with; the test that runs it compares the
answers with the library's own in process. No platform code is imported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def ask(
    client: grpcclient.InferenceServerClient, case: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    rows = np.array(case["rows"], dtype=np.float64)
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = client.infer(case["model"], [tensor], headers=headers)
    metadata = client.get_model_metadata(case["model"], headers=headers, as_json=True)
    answer: dict[str, Any] = {
        "model": case["model"],
        "version": result.get_response().model_version,
        "platform": metadata["platform"],
        "probabilities": result.as_numpy("probabilities").tolist(),
        "labels": [v.decode() for v in result.as_numpy("label").ravel()],
    }
    if case.get("explain"):
        try:
            explained = client.infer(case["model"], [tensor], parameters={"explain": True}, headers=headers)
            answer["contributions"] = explained.as_numpy("contributions").tolist()
            answer["contributions_base"] = explained.as_numpy("contributions_base").tolist()
        except InferenceServerException as exc:
            answer["explain_error"] = {"status": exc.status(), "message": exc.message()}
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="serving's gRPC host:port")
    parser.add_argument("--token", required=True, help="a token with the predict scope")
    parser.add_argument("--case", required=True, help="JSON file: a list of {model, rows, explain}")
    args = parser.parse_args()
    with open(args.case) as file:
        cases = json.load(file)
    client = grpcclient.InferenceServerClient(url=args.url)
    failed = 0
    for case in cases:
        try:
            print(json.dumps(ask(client, case, {"authorization": f"Bearer {args.token}"})), flush=True)
        except Exception as exc:
            failed += 1
            print(json.dumps({"model": case["model"], "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    client.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
