"""Every docstring example in services/ runs and holds.

Modules are found by the ``>>>`` in their source, so a new module's examples run without
anyone listing it here, and a module whose examples doctest cannot find (or which stopped
running them) fails instead of passing on zero examples.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"


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


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    examples = [example for test in doctest.DocTestFinder().find(module) for example in test.examples]
    assert examples, f"{name} has '>>>' in it, but no example doctest would run"
    runnable = [example for example in examples if not example.options.get(doctest.SKIP)]
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted == len(runnable)
    # Only a module whose every example is marked +SKIP (one that starts processes) runs none.
    assert result.attempted > 0 or not runnable
