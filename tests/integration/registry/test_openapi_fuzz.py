"""schemathesis over the REST mirror's OpenAPI document: whatever the generated requests
hold, the registry never answers with a server error, and every answer is one the
document declares.

The registry runs as its own process here (``python -m services.registry``), as in
production: the generated calls are synchronous and must not share the test's event loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.common.auth import Scope
from services.common.localstack import free_port
from tests.conftest import Infra
from tests.helpers.artifacts import random_artifact
from tests.integration.registry.conftest import SIGNING_KEY
from tests.integration.registry.helpers import metadata

SEEDED_MODEL = "fuzz-seed"
# Per operation and mode; 21 operations x 4 runs x EXAMPLES calls at most.
EXAMPLES = 8


@pytest.fixture(scope="module")
def registry_process(infra: Infra) -> Iterator[str]:
    """A registry process with one model, two versions and a spec already in it."""
    name = "fuzz" + uuid.uuid4().hex[:8]
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        **infra.env(name, name),
        "MLOPS_ARTIFACT_SIGNING_KEY": SIGNING_KEY,
        "REGISTRY_HTTP_PORT": str(http_port),
        "REGISTRY_GRPC_PORT": str(grpc_port),
        "REGISTRY_MAX_ARTIFACT_BYTES": str(1024 * 1024),
    }
    log = (infra.logs / f"registry-{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.registry"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{http_port}"
    log_path = infra.logs / f"registry-{name}.log"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"registry exited during start-up:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"registry not ready within 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        seed(base, infra.token(Scope.ADMIN, subject="seeder"))
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(20)
        log.close()
    assert returncode == 0, "the registry did not stop cleanly on SIGTERM"


def seed(base: str, token: str) -> None:
    from google.protobuf import json_format

    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{base}/v1/models", json={"name": SEEDED_MODEL}, headers=headers).raise_for_status()
    for _ in range(2):
        artifact = random_artifact(2000)
        meta = json_format.MessageToDict(metadata(SEEDED_MODEL, artifact), preserving_proto_field_name=True)
        httpx.post(
            f"{base}/v1/models/{SEEDED_MODEL}/versions",
            data={"metadata": json.dumps(meta)},
            files={"artifact": ("a", artifact)},
            headers=headers,
            timeout=60,  # the first upload imports the skops flavor's libraries to verify it
        ).raise_for_status()
    httpx.post(
        f"{base}/v1/models/{SEEDED_MODEL}/specs", json={"dataset": "demo"}, headers=headers
    ).raise_for_status()


@pytest.fixture(scope="module")
def api(registry_process: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{registry_process}/openapi.json")


@pytest.fixture(scope="module")
def admin_headers(infra: Infra) -> dict[str, str]:
    return {"Authorization": f"Bearer {infra.token(Scope.ADMIN, subject='fuzzer')}"}


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Operations the REST mirror must offer whatever else it grows: the fuzzer must reach them all.
CORE = {
    "POST /v1/models",
    "GET /v1/models",
    "GET /v1/models/{name}",
    "PATCH /v1/models/{name}",
    "POST /v1/models/{name}/versions",
    "GET /v1/models/{name}/versions",
    "GET /v1/audit",
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("pin_model", [False, True], ids=["any-name", "seeded-model"])
def test_no_server_error_and_only_declared_answers(
    api: BaseSchema, admin_headers: dict[str, str], mode: GenerationMode, pin_model: bool
) -> None:
    """Every operation, with generated (or deliberately invalid) input; with the model name
    pinned to a seeded model, the calls get past "not found" into the real work."""
    failures: list[str] = []
    documented: set[str] = set()
    calls: dict[str, int] = {}
    nothing_to_break: set[str] = set()
    for result in api.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        pinned = {"name": SEEDED_MODEL} if pin_model and "{name}" in operation.path else None
        if pin_model and pinned is None:
            continue
        documented.add(operation.label)

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        def exercise(case: Case[Any]) -> None:
            response = case.call(headers=admin_headers, timeout=30)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.validate_response(response, checks=CHECKS)

        try:
            exercise()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label
            nothing_to_break.add(operation.label)
        except (Exception, FailureGroup) as exc:  # collect every operation's failures before failing
            failures.append(f"{operation.label}: {exc!r}")
    assert not failures, "\n\n".join(failures)
    # Every documented operation was called (none passes by being skipped), the core ones included.
    expected = {label for label in CORE if "{name}" in label or not pin_model}
    assert expected <= documented, expected - documented
    assert set(calls) | nothing_to_break == documented
    assert expected <= set(calls), expected - set(calls)
