"""The checked-in generated code is exactly what protos/ generates."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in checked-in: {n}" for n in comparison.left_only]
    found += [f"only in generated: {n}" for n in comparison.right_only]
    found += [f"differs: {n}" for n in comparison.diff_files]
    for sub in comparison.subdirs.values():
        found += differences(Path(sub.left), Path(sub.right))
    return found


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generator = load_generator()
    generator.generate(tmp_path / "proto")  # type: ignore[attr-defined]
    stale = differences(REPO / "services" / "common" / "proto", tmp_path / "proto")
    assert not stale, "run `make proto`: " + "; ".join(stale)
