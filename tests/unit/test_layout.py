"""The developers' guide's rules of shape that a machine can check: no hand-written module over
600 lines, and the database and gRPC libraries imported only at a service's edges (adapters,
stores, clients, composition roots), never by the domain code between them."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600
GENERATED = "services/common/proto/"

EDGE_LIBRARIES = frozenset({"grpc", "grpc_health", "grpc_reflection", "pymongo", "bson", "gridfs"})
EDGES = (
    # Composition roots.
    "services/*/__main__.py",
    "services/*/app.py",
    # Adapters: servicers and routes that translate a transport and call the domain.
    "services/*/grpc_api.py",
    "services/*/http_api.py",
    # Stores: the only database code.
    "services/*/store.py",
    "services/*/*_store.py",
    "services/*/store/*.py",
    # The shared package's edges: clients, the gRPC server and its interceptors, the
    # database client, Kafka's retry rules (a failed gRPC call may be transient).
    "services/common/clients/*.py",
    "services/common/grpc_*.py",
    "services/common/auth/interceptor.py",
    "services/common/kafka.py",
    "services/common/mongo.py",
    "services/common/tls.py",
    "services/common/tracing.py",
    # The CLI is a client program: each command calls the services.
    "services/cli/*.py",
)


def hand_written() -> list[str]:
    """The repository's Python files git knows, generated code left out."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(p for p in listed if not p.startswith(GENERATED) and (ROOT / p).exists())


def edge_imports(source: str) -> set[str]:
    """The edge libraries ``source`` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & EDGE_LIBRARIES


def is_edge(path: str) -> bool:
    return any(PurePosixPath(path).match(pattern) for pattern in EDGES)


def test_the_checks_see_the_code() -> None:
    files = hand_written()
    assert "services/serving/inference.py" in files and "tests/unit/test_layout.py" in files
    assert not any(f.startswith(GENERATED) for f in files)
    assert edge_imports("import grpc.aio\nfrom pymongo.errors import PyMongoError\nimport numpy") == {
        "grpc",
        "pymongo",
    }
    assert edge_imports("def lazy():\n    from bson import ObjectId\n") == {"bson"}
    assert is_edge("services/registry/store/versions.py") and is_edge("services/trainer/job_store.py")
    assert not is_edge("services/serving/models.py") and not is_edge("services/registry/versions.py")


def test_no_module_is_over_600_lines() -> None:
    lengths = {path: len((ROOT / path).read_text().splitlines()) for path in hand_written()}
    too_long = {path: lines for path, lines in lengths.items() if lines > MAX_LINES}
    assert not too_long, f"split these by concern: {too_long}"


def test_domain_modules_import_neither_grpc_nor_the_database() -> None:
    offenders = {
        path: sorted(imported)
        for path in hand_written()
        if path.startswith("services/") and not is_edge(path)
        if (imported := edge_imports((ROOT / path).read_text()))
    }
    assert not offenders, (
        f"translate at a client, store or adapter instead (services.common.errors for failures): {offenders}"
    )
