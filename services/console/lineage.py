"""A version's lineage as a graph to draw: the data window it was trained on, the versions
it descends from, the versions trained from it, and the other versions trained on exactly
the same data. Both ways: every version node links to its own lineage.

The layout is computed here (no I/O, no drawing); the template draws it as SVG, so the
page needs no graph library and no script.

::

    ancestors (oldest first)  ->  this version  ->  children (stacked)
                                       ^
                                 data window  ->  other versions on the same data
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.clients.registry import ModelVersion
from services.common.proto.mlops.v1 import registry_pb2
from services.console.compare import when

NODE_WIDTH = 190
NODE_HEIGHT = 54
COLUMN = 260
ROW = 84
MARGIN = 16
MAX_SHOWN = 8
"""Ancestors, children and same-data versions drawn at most, each (the rest are counted)."""


@dataclass(frozen=True)
class Node:
    key: str
    kind: str
    """``version``, ``current`` (the version the page is about) or ``data``."""
    title: str
    detail: str
    status: str
    href: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    hidden: dict[str, int]
    """How many ancestors, children or same-data versions were left out."""

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)


def version_key(version: ModelVersion) -> str:
    return f"{version.model_name}/v{version.version}"


def lineage_href(version: ModelVersion) -> str:
    return f"/models/{version.model_name}/versions/{version.version}/lineage"


def _status(version: ModelVersion) -> str:
    return registry_pb2.VersionStatus.Name(version.status).removeprefix("VERSION_STATUS_").lower()


def _version_node(version: ModelVersion, x: int, y: int, current: bool = False) -> Node:
    aliases = ", ".join(version.aliases)
    return Node(
        key=version_key(version),
        kind="current" if current else "version",
        title=f"{version.model_name} v{version.version}",
        detail=aliases or _status(version).replace("_", " "),
        status=_status(version),
        href=lineage_href(version),
        x=x,
        y=y,
    )


def _edge(source: Node, target: Node, label: str) -> Edge:
    """From ``source`` to ``target``: side to side within a row, else from the facing edges."""
    sx, tx = source.x + NODE_WIDTH // 2, target.x + NODE_WIDTH // 2
    if target.y >= source.y + NODE_HEIGHT:  # below
        return Edge(source.key, target.key, label, sx, source.y + NODE_HEIGHT, tx, target.y)
    if target.y + NODE_HEIGHT <= source.y:  # above
        return Edge(source.key, target.key, label, sx, source.y, tx, target.y + NODE_HEIGHT)
    middle = source.y + NODE_HEIGHT // 2
    return Edge(source.key, target.key, label, source.x + NODE_WIDTH, middle, target.x, middle)


def build(lineage: registry_pb2.LineageResponse) -> Graph:
    """The graph of ``lineage`` (the registry's ``GetLineage`` answer).

    >>> from services.common.proto.mlops.v1 import model_pb2
    >>> def v(n, parent=0):
    ...     return registry_pb2.ModelVersion(model_name="churn", version=n,
    ...         lineage=model_pb2.Lineage(parent_version=parent))
    >>> me = v(3, parent=2)
    >>> me.lineage.data.content_sha256 = "ab" * 32
    >>> me.lineage.data.window.dataset = "events"
    >>> graph = build(registry_pb2.LineageResponse(version=me, ancestors=[v(2, 1), v(1)], children=[v(4, 3)],
    ...     same_data=[v(2, 1), registry_pb2.ModelVersion(model_name="other", version=7)]))
    >>> [n.key for n in graph.nodes]
    ['data', 'churn/v1', 'churn/v2', 'churn/v3', 'churn/v4', 'other/v7']
    >>> [(e.source, e.target) for e in graph.edges]  # doctest: +NORMALIZE_WHITESPACE
    [('churn/v1', 'churn/v2'), ('churn/v2', 'churn/v3'), ('data', 'churn/v3'),
     ('churn/v3', 'churn/v4'), ('data', 'other/v7')]
    >>> graph.node("other/v7").y < graph.node("data").y < graph.node("churn/v3").y
    True
    """
    version = lineage.version
    ancestors = list(reversed(lineage.ancestors[:MAX_SHOWN]))  # oldest first
    children = list(lineage.children[:MAX_SHOWN])
    drawn = {version_key(v) for v in (version, *lineage.ancestors, *lineage.children)}
    # Versions of the chain that share the data are drawn once, in the chain.
    others = [v for v in lineage.same_data if version_key(v) not in drawn]
    same_data = others[:MAX_SHOWN]
    hidden = {
        "ancestors": max(0, len(lineage.ancestors) - MAX_SHOWN),
        "children": max(0, len(lineage.children) - MAX_SHOWN),
        "same data": max(0, len(others) - MAX_SHOWN),
    }
    # Rows: versions on the same data, the data window, then the chain through this version.
    rows = [MARGIN, MARGIN + ROW, MARGIN + 2 * ROW] if same_data else [MARGIN, MARGIN, MARGIN + ROW]
    # The same-data row is centred over this version where the chain leaves room.
    current_column = max(len(ancestors), (len(same_data) - 1) // 2)
    first_other = max(0, current_column - (len(same_data) - 1) // 2)

    def x(column: int) -> int:
        return MARGIN + column * COLUMN

    data = version.lineage.data
    hash_text = data.content_sha256[:12] + "…" if data.content_sha256 else "no content hash"
    window = f"{when(data.window.start_time) or 'open'} to {when(data.window.end_time) or 'open'}"
    data_node = Node(
        key="data",
        kind="data",
        title=f"data: {data.window.dataset or version.spec.dataset or 'unknown dataset'}",
        detail=f"{data.row_count} rows, {hash_text}",
        status=window,
        href=f"/datasets/{data.window.dataset}" if data.window.dataset else "",
        x=x(current_column),
        y=rows[1],
    )
    nodes = [data_node]
    edges: list[Edge] = []
    previous: Node | None = None
    offset = current_column - len(ancestors)
    for column, ancestor in enumerate(ancestors):
        node = _version_node(ancestor, x(offset + column), rows[2])
        nodes.append(node)
        if previous is not None:
            edges.append(_edge(previous, node, "parent of"))
        previous = node
    current = _version_node(version, x(current_column), rows[2], current=True)
    nodes.append(current)
    if previous is not None:
        edges.append(_edge(previous, current, "parent of"))
    edges.append(_edge(data_node, current, "trained on"))
    for row, child in enumerate(children):
        node = _version_node(child, x(current_column + 1), rows[2] + row * ROW)
        nodes.append(node)
        edges.append(_edge(current, node, "parent of"))
    for column, other in enumerate(same_data):
        node = _version_node(other, x(first_other + column), rows[0])
        nodes.append(node)
        edges.append(_edge(data_node, node, "same data"))
    width = max(n.x for n in nodes) + NODE_WIDTH + MARGIN
    height = max(n.y for n in nodes) + NODE_HEIGHT + MARGIN
    return Graph(nodes, edges, width, height, hidden)
