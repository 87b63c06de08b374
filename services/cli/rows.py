"""Rows from CSV or JSON Lines files, for ``mlops produce`` and ``mlops predict``.

A bad line is reported with its number and skipped, never sent half-parsed. CSV cells
that are finite numbers become numbers; everything else stays text, so ``nan`` or
``inf`` reach the platform's validation as the strings they were rather than as
values JSON cannot carry.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Format = Literal["csv", "jsonl"]
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def detect_format(path: str, explicit: str | None) -> Format:
    if explicit is not None:
        if explicit not in ("csv", "jsonl"):
            raise ValueError(f"unknown format {explicit!r}: use csv or jsonl")
        return explicit  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path!r} from its name: pass --format csv or jsonl")


def parse_cell(text: str) -> Any:
    """A CSV cell as a number when it is a finite one, else the text itself."""
    stripped = text.strip()
    if _INT.match(stripped):
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_rows(path: str, fmt: Format, *, infer_types: bool = True) -> Iterator[Row | BadRow]:
    """Each row of ``path`` (``-`` for stdin) as a :class:`Row` or, if it cannot be read, a :class:`BadRow`."""
    handle = sys.stdin if path == "-" else open(path, newline="", encoding="utf-8")
    try:
        if fmt == "csv":
            yield from _read_csv(handle, infer_types)
        else:
            yield from _read_jsonl(handle)
    finally:
        if handle is not sys.stdin:
            handle.close()


def _read_csv(handle: io.TextIOBase | Any, infer_types: bool) -> Iterator[Row | BadRow]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or any(not n for n in names):
        yield BadRow(1, "header has empty or repeated column names")
        return
    for cells in reader:
        line = reader.line_num
        if not cells:
            continue
        if len(cells) != len(names):
            yield BadRow(line, f"{len(cells)} cells for {len(names)} columns")
            continue
        values = {
            name: parse_cell(cell) if infer_types else cell
            for name, cell in zip(names, cells, strict=True)
            if cell != ""
        }
        yield Row(line, values)


def _read_jsonl(handle: io.TextIOBase | Any) -> Iterator[Row | BadRow]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            yield BadRow(number, f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield BadRow(number, f"expected a JSON object, got {type(value).__name__}")
            continue
        yield Row(number, value)


def count_lines(path: str) -> int | None:
    """Lines in ``path`` (for a progress bar's total); unknown for stdin."""
    if path == "-":
        return None
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)
