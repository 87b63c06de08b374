"""Every line a service writes to stderr is one JSON object, library warnings included."""

from __future__ import annotations

import json
import subprocess
import sys

SERVICE = """
import warnings
import numpy as np
from services.common.logging import configure_logging, get_logger
configure_logging("probe")
get_logger("probe").info("before")
with np.errstate(over="warn"):
    np.float64(1e308) * np.float64(10)
warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
get_logger("probe").info("after")
"""


def test_library_warnings_are_json_lines_like_every_other() -> None:
    # -W default: show DeprecationWarning, as a service run with warnings enabled would.
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", SERVICE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # fails on a plain-text line
    assert [line["event"] for line in lines if line["logger"] == "probe"] == ["before", "after"]
    warned = [line for line in lines if line["logger"] == "py.warnings"]
    assert len(warned) == 2
    assert "RuntimeWarning: overflow encountered" in warned[0]["event"]
    assert "DeprecationWarning: a library's deprecation" in warned[1]["event"]
    assert {line["level"] for line in warned} == {"warning"} and {line["service"] for line in warned} == {
        "probe"
    }
