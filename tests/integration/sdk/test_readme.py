"""The README's notebook session, run as written against a live stack, from a thread with an
event loop of its own running (as in Jupyter); and the SDK's errors, which are the
platform's."""

from __future__ import annotations

import asyncio
import doctest
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from services.common.auth import Scope
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.sdk import Client
from tests.integration.serving.conftest import ROOT, Stack

EXAMPLE = re.compile(r"<!-- sdk-example[^>]*-->\n```python\n(.*?)```", re.S)


def readme_session() -> str:
    found = EXAMPLE.search((ROOT / "README.md").read_text())
    assert found, "the README's SDK example is marked <!-- sdk-example ... -->"
    return found.group(1)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[.*\n?", re.M)


class WithoutServiceLogs(doctest.OutputChecker):
    """The services under test run in this process and log to the same stdout the session
    prints to: their lines are not the session's output."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(want, LOG_LINE.sub("", got), optionflags)


def run_doctest(text: str) -> doctest.TestResults:
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", "README.md", 0)
    runner = doctest.DocTestRunner(checker=WithoutServiceLogs(), optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


async def test_the_readme_session_runs_as_written(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_REGISTRY_ADDRESS", f"127.0.0.1:{stack.registry.grpc_port}")
    monkeypatch.setenv("MLOPS_SERVING_ADDRESS", f"127.0.0.1:{stack.serving.grpc_port}")
    monkeypatch.setenv("MLOPS_TOKEN", stack.infra.token(Scope.ADMIN))

    async def in_a_notebook() -> doctest.TestResults:
        # A loop runs in this thread, as Jupyter's does; the session's calls are synchronous.
        return run_doctest(readme_session())

    # The services answer on this test's loop: the session runs in a thread of its own.
    results = await asyncio.to_thread(asyncio.run, in_a_notebook())
    assert results.attempted >= 10 and results.failed == 0, results
    served = await stack.admin.get_model("churn")
    assert served.aliases["production"] == 1


def client_for(stack: Stack, *scopes: Scope) -> Client:
    return Client(
        f"127.0.0.1:{stack.registry.grpc_port}",
        f"127.0.0.1:{stack.serving.grpc_port}",
        stack.infra.token(*(scopes or (Scope.ADMIN,))),
    )


async def test_an_artifact_file_round_trips_and_errors_are_the_platforms(
    stack: Stack, tmp_path: Path
) -> None:
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    model = LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5]))
    example = tmp_path / "rows.csv"
    example.write_text("a,b,c\n" + "\n".join(",".join(map(str, row)) for row in X[:4]))

    def session() -> dict[str, Any]:
        with client_for(stack) as client:
            first = client.register(name, model, input_example=example)
            client.set_alias(name, "production", first.number)
            out: dict[str, Any] = {"first": first}
            out["version"] = client.version(name)
            client.wait_until_served(name, first.number)
            out["predicted"] = client.predict(name, X[:4])
            with pytest.raises(NotFound):
                client.predict("no-such-model", X[:4])
            with pytest.raises(Unavailable):  # never promoted: serving never loads it
                client.wait_until_served(f"{name}-unpromoted", timeout=0.5)
            with pytest.raises(InvalidArgument) as bad_example:
                client.register(name, model, input_example=X[:2, :2])
            out["bad_example"] = bad_example.value
            with pytest.raises(NotFound):
                client.version("no-such-model")
        with client_for(stack, Scope.READ) as reader, pytest.raises(PermissionDenied):
            reader.set_alias(name, "staging", 1)
        return out

    out = await asyncio.to_thread(session)
    assert list(out["first"].version.signature.feature_names) == ["a", "b", "c"]
    assert out["version"].version == 1 and out["version"].artifact.format == "skops"
    assert out["bad_example"].field == "input_example" and "2 columns" in out["bad_example"].message
    np.testing.assert_allclose(out["predicted"], model.predict(X[:4]), atol=1e-9)
