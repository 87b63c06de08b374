"""The console's front-end files: vendored ones unchanged since they were copied from npm,
and nothing in the templates that the Content-Security-Policy would refuse."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

import services.console

PACKAGE = Path(services.console.__file__).parent
VENDOR = PACKAGE / "static" / "vendor"
TEMPLATES = sorted((PACKAGE / "templates").glob("*.html"))


def test_vendored_files_are_what_their_record_says() -> None:
    record = json.loads((VENDOR / "vendor.json").read_text())
    for entry in record["files"]:
        data = (VENDOR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
        assert (VENDOR / entry["license_file"]).exists()
        assert entry["version"] in (VENDOR / "README.md").read_text()
    listed = {e["file"] for e in record["files"]} | {e["license_file"] for e in record["files"]}
    assert {p.name for p in VENDOR.iterdir()} - listed == {"vendor.json", "README.md"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_have_no_inline_script_style_or_handler(template: Path) -> None:
    text = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script>"
    assert "<style" not in text, "inline <style>"
    assert not re.search(r"\sstyle\s*=", text), "style attribute"
    assert not re.search(r"\son[a-z]+\s*=", text), "event handler attribute"
    assert "javascript:" not in text
    assert "hx-on" not in text and "js:" not in text  # htmx's eval paths are off


def test_every_static_file_a_template_loads_exists() -> None:
    base = (PACKAGE / "templates" / "base.html").read_text()
    for path in re.findall(r'(?:src|href)="/static/([^"]+)"', base):
        assert (PACKAGE / "static" / path).is_file(), path


def test_htmx_is_configured_for_the_policy() -> None:
    base = (PACKAGE / "templates" / "base.html").read_text()
    config = json.loads(re.search(r"name=\"htmx-config\" content='([^']+)'", base).group(1))  # type: ignore[union-attr]
    assert config["allowEval"] is False and config["allowScriptTags"] is False
    assert config["includeIndicatorStyles"] is False  # it would insert a <style> element
    assert config["historyCacheSize"] == 0  # pages (and their forms' tokens) stay out of localStorage
