"""Every docstring example in services/ runs and holds.

Modules are found by the ``>>>`` in their source, so a new module's examples run without
anyone listing it here, and a module whose examples doctest cannot find (or which stopped
running them) fails instead of passing on zero examples.
"""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.environments import FEDERATION_PYTHON, require

SERVICES = Path(__file__).resolve().parents[2] / "services"
OWN_ENVIRONMENT = "services.federation."
"""Modules whose examples use packages only their own environment has (Flower's): they run
there, each in a subprocess, with the same checks."""


def modules_with_examples() -> list[str]:
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        relative = path.relative_to(SERVICES.parent)
        if "proto" in relative.parts or ">>>" not in path.read_text():
            continue
        found.append(".".join(relative.with_suffix("").parts))
    return found


MODULES = modules_with_examples()


def test_examples_are_found() -> None:
    assert len(MODULES) >= 10, MODULES


COUNT = """
import doctest, importlib, json, sys
module = importlib.import_module(sys.argv[1])
examples = [e for t in doctest.DocTestFinder().find(module) for e in t.examples]
result = doctest.testmod(module)
print(json.dumps([len(examples), len([e for e in examples if not e.options.get(doctest.SKIP)]),
                  result.failed, result.attempted]))
"""


def counts(name: str) -> tuple[int, int, int, int]:
    """Examples found, examples not skipped, failed and attempted, for module ``name``."""
    if name.startswith(OWN_ENVIRONMENT):
        require(FEDERATION_PYTHON, "federation-venv")
        run = subprocess.run(
            [str(FEDERATION_PYTHON), "-c", COUNT, name], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-2000:]
        found, runnable, failed, attempted = json.loads(run.stdout.splitlines()[-1])
        assert failed == 0, run.stdout[-4000:]
        return found, runnable, failed, attempted
    module = importlib.import_module(name)
    examples = [example for test in doctest.DocTestFinder().find(module) for example in test.examples]
    result = doctest.testmod(module)
    runnable = [example for example in examples if not example.options.get(doctest.SKIP)]
    return len(examples), len(runnable), result.failed, result.attempted


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    found, runnable, failed, attempted = counts(name)
    assert found, f"{name} has '>>>' in it, but no example doctest would run"
    assert failed == 0
    assert attempted == runnable
    # Only a module whose every example is marked +SKIP (one that starts processes) runs none.
    assert attempted > 0 or not runnable
