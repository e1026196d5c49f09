"""Draw a graph spec as Mermaid or Graphviz DOT text, or as SVG through Graphviz.

Plotting reads the spec only: nothing is imported or run. The drawing has:

- an entry node ``source`` (a circle) with an edge to every step that has no ``after`` and is
  not an error handler;
- one node per step, labelled with the step name and the short class or function name;
- an edge from each ``after`` parent to its step;
- a router step as a diamond, with one labelled edge per route to a node for the route;
- a responder step drawn bold (a stadium in Mermaid, a double box in DOT), with an edge to a
  ``response`` terminal node (a double circle);
- a dashed ``on error`` edge from a step to its error handler, and a dashed
  ``on error (graph)`` edge from ``source`` to the graph-level handler.

Names that a step refers to but that the spec lacks are drawn as dashed "missing" nodes, so an
invalid graph can still be plotted while it is being fixed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from .spec import GraphSpec, StepKind, StepSpec

FORMATS = ("mermaid", "dot", "svg")
"""The formats ``render`` accepts."""

_SOURCE = "source"
_RESPONSE = "response"
_ON_ERROR = "on error"
_ON_GRAPH_ERROR = "on error (graph)"

_MERMAID_ESCAPES = {
    "#": "#35;",
    '"': "#quot;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "\n": "<br>",
}
# Mermaid entity codes start with '#', so '#' itself is escaped first (it is in the same pass).


class _Shape(StrEnum):
    ENTRY = "entry"
    STEP = "step"
    ROUTER = "router"
    QUEUE = "queue"
    ROUTE = "route"
    RESPONSE = "response"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class _Node:
    key: str  # the preferred DOT id (made unique when the DOT text is written)
    lines: tuple[str, ...]
    shape: _Shape
    is_responder: bool = False


@dataclass(frozen=True, slots=True)
class _Edge:
    source: int  # node indexes
    target: int
    label: str | None = None
    is_dashed: bool = False


@dataclass(slots=True)
class _Diagram:
    nodes: list[_Node] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)
    by_name: dict[str, int] = field(default_factory=dict)

    def add(self, node: _Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def connect(
        self, source: int, target: int, label: str | None = None, *, is_dashed: bool = False
    ) -> None:
        self.edges.append(_Edge(source, target, label, is_dashed))

    def named(self, name: str) -> int:
        """Return the node of the step called ``name``, adding a "missing" node if none."""
        if name not in self.by_name:
            self.by_name[name] = self.add(_Node(name, (name, "(missing)"), _Shape.MISSING))
        return self.by_name[name]


def render(spec: GraphSpec, format: str) -> str:  # noqa: A002 - the word Graph.plot uses
    """Return ``spec`` drawn in ``format``.

    Args:
        spec: the graph to draw.
        format: ``"mermaid"``, ``"dot"`` (Graphviz) or ``"svg"`` (needs the Graphviz ``dot``
            program).

    Returns:
        The drawing as text.

    Raises:
        ValueError: ``format`` is not one of the allowed formats.
        FileNotFoundError: ``format`` is ``"svg"`` and Graphviz is not installed.

    Example:
        >>> from servegraph import GraphSpec, StepSpec
        >>> print(render(GraphSpec(steps=(StepSpec(name="a"),)), "dot").splitlines()[0])
        digraph servegraph {
    """
    if format == "mermaid":
        return to_mermaid(spec)
    if format == "dot":
        return to_dot(spec)
    if format == "svg":
        return to_svg(spec)
    message = f"unknown plot format {format!r}; allowed formats: {', '.join(FORMATS)}"
    raise ValueError(message)


def to_mermaid(spec: GraphSpec) -> str:
    """Return ``spec`` as a Mermaid flowchart.

    Nodes get generated ids (``n0``, ``n1``, ...) and quoted labels, so any step name is safe.

    Args:
        spec: the graph to draw.

    Returns:
        The Mermaid text, ending with a newline.

    Example:
        >>> from servegraph import GraphSpec, StepSpec
        >>> spec = GraphSpec(steps=(StepSpec(name="a", handler="pkg.mod:prepare"),))
        >>> print(to_mermaid(spec), end="")
        flowchart LR
            n0(("source"))
            n1["a<br>prepare"]
            n0 --> n1
    """
    diagram = _diagram(spec)
    lines = ["flowchart LR"]
    used_classes: list[str] = []
    for index, node in enumerate(diagram.nodes):
        opening, closing = _MERMAID_SHAPES[node.shape]
        if node.is_responder and node.shape is not _Shape.ROUTER:
            opening, closing = "([", "])"  # a stadium
        label = "\n".join(node.lines)
        suffix = ""
        style = _mermaid_class(node)
        if style:
            suffix = f":::{style}"
            if style not in used_classes:
                used_classes.append(style)
        lines.append(f'    n{index}{opening}"{_mermaid_text(label)}"{closing}{suffix}')
    for edge in diagram.edges:
        arrow = "-.->" if edge.is_dashed else "-->"
        label = "" if edge.label is None else f'|"{_mermaid_text(edge.label)}"|'
        lines.append(f"    n{edge.source} {arrow}{label} n{edge.target}")
    lines.extend(f"    classDef {name} {_MERMAID_CLASSES[name]}" for name in used_classes)
    return "\n".join(lines) + "\n"


def to_dot(spec: GraphSpec) -> str:
    """Return ``spec`` as a Graphviz DOT digraph.

    Node ids are the quoted step names (routes are ``"router/route"``); ``"`` and ``\\`` are
    escaped, and an id already taken gets a ``~2``, ``~3``... suffix.

    Args:
        spec: the graph to draw.

    Returns:
        The DOT text, ending with a newline.

    Example:
        >>> from servegraph import GraphSpec, StepSpec
        >>> spec = GraphSpec(steps=(StepSpec(name="a", handler="pkg.mod:prepare"),))
        >>> print(to_dot(spec), end="")
        digraph servegraph {
            rankdir=LR;
            node [shape=box, style=rounded];
            "source" [label="source", shape=circle];
            "a" [label="a\\nprepare"];
            "source" -> "a";
        }
    """
    diagram = _diagram(spec)
    ids = _unique_ids(node.key for node in diagram.nodes)
    lines = ["digraph servegraph {", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    for node_id, node in zip(ids, diagram.nodes, strict=True):
        label = "\\n".join(_dot_text(line) for line in node.lines)
        attributes = [f'label="{label}"', *_DOT_SHAPES[node.shape]]
        if node.is_responder:
            attributes.extend(('style="rounded,bold"', "peripheries=2"))
        lines.append(f'    "{_dot_text(node_id)}" [{", ".join(attributes)}];')
    for edge in diagram.edges:
        attributes = []
        if edge.label is not None:
            attributes.append(f'label="{_dot_text(edge.label)}"')
        if edge.is_dashed:
            attributes.append("style=dashed")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        source, target = _dot_text(ids[edge.source]), _dot_text(ids[edge.target])
        lines.append(f'    "{source}" -> "{target}"{suffix};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(spec: GraphSpec) -> str:
    """Return ``spec`` as SVG, drawn by the Graphviz ``dot`` program from ``to_dot(spec)``.

    Args:
        spec: the graph to draw.

    Returns:
        The SVG document.

    Raises:
        FileNotFoundError: the ``dot`` program is not on the PATH.
        subprocess.CalledProcessError: ``dot`` failed (its ``stderr`` says why).
        subprocess.TimeoutExpired: ``dot`` ran for more than 30 seconds.
    """
    dot = shutil.which("dot")
    if dot is None:
        message = (
            "the Graphviz 'dot' program is needed for SVG; install graphviz "
            "(apt-get install graphviz)"
        )
        raise FileNotFoundError(message)
    completed = subprocess.run(
        [dot, "-Tsvg"],
        input=to_dot(spec).encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return completed.stdout.decode()


# -- the drawing, independent of the output format -------------------------------------------


def _diagram(spec: GraphSpec) -> _Diagram:
    handlers = _handler_names(spec)
    diagram = _Diagram()
    source = diagram.add(_Node(_SOURCE, (_SOURCE,), _Shape.ENTRY))
    for step in spec.steps:
        shape = _SHAPES_OF_KINDS[step.kind]
        node = diagram.add(_Node(step.name, _step_lines(step), shape, step.responder))
        diagram.by_name.setdefault(step.name, node)
    response: int | None = None
    for step in spec.steps:
        node = diagram.by_name[step.name]
        for parent in step.after:
            diagram.connect(diagram.named(parent), node)
        if not step.after and step.name not in handlers:
            diagram.connect(source, node)
        drawn = [(node, step)]
        for route in step.routes:
            key = f"{step.name}/{route.name}"
            route_node = diagram.add(_Node(key, _step_lines(route), _Shape.ROUTE, route.responder))
            is_default = route.name == step.default_route
            diagram.connect(
                node, route_node, f"{route.name} (default)" if is_default else route.name
            )
            drawn.append((route_node, route))
        for drawn_node, drawn_step in drawn:
            if drawn_step.responder:
                if response is None:
                    response = diagram.add(_Node(_RESPONSE, (_RESPONSE,), _Shape.RESPONSE))
                diagram.connect(drawn_node, response)
            if drawn_step.on_error is not None:
                handler = diagram.named(drawn_step.on_error)
                diagram.connect(drawn_node, handler, _ON_ERROR, is_dashed=True)
    if spec.on_error is not None:
        diagram.connect(source, diagram.named(spec.on_error), _ON_GRAPH_ERROR, is_dashed=True)
    return diagram


_SHAPES_OF_KINDS = {
    StepKind.TASK: _Shape.STEP,
    StepKind.ROUTER: _Shape.ROUTER,
    StepKind.QUEUE: _Shape.QUEUE,
}


def _handler_names(spec: GraphSpec) -> set[str]:
    names = {spec.on_error} if spec.on_error is not None else set()
    for step in spec.steps:
        for named in (step, *step.routes):
            if named.on_error is not None:
                names.add(named.on_error)
    return names


def _step_lines(step: StepSpec) -> tuple[str, ...]:
    if step.stream is not None:
        return (step.name, step.stream)
    short = _short_name(step)
    return (step.name,) if short is None else (step.name, short)


def _short_name(step: StepSpec) -> str | None:
    if step.class_name is not None:
        name = _last_part(step.class_name)
        return name if step.handler is None else f"{name}.{step.handler}"
    if step.handler is not None:
        return _last_part(step.handler)
    return None


def _last_part(reference: str) -> str:
    return reference.replace(":", ".").rsplit(".", 1)[-1]


# -- Mermaid -----------------------------------------------------------------------------------

_MERMAID_SHAPES = {
    _Shape.ENTRY: ("((", "))"),
    _Shape.STEP: ("[", "]"),
    _Shape.ROUTER: ("{", "}"),
    _Shape.QUEUE: ("[(", ")]"),
    _Shape.ROUTE: ("[", "]"),
    _Shape.RESPONSE: ("(((", ")))"),
    _Shape.MISSING: ("[", "]"),
}

_MERMAID_CLASSES = {
    "responder": "stroke-width:3px",
    "missing": "stroke-dasharray:5 5",
}


def _mermaid_class(node: _Node) -> str:
    if node.is_responder:
        return "responder"
    return "missing" if node.shape is _Shape.MISSING else ""


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(character, character) for character in text)


# -- DOT ---------------------------------------------------------------------------------------

_DOT_SHAPES: dict[_Shape, tuple[str, ...]] = {
    _Shape.ENTRY: ("shape=circle",),
    _Shape.STEP: (),
    _Shape.ROUTER: ("shape=diamond",),
    _Shape.QUEUE: ("shape=cylinder",),
    _Shape.ROUTE: (),
    _Shape.RESPONSE: ("shape=doublecircle",),
    _Shape.MISSING: ('style="rounded,dashed"',),
}


def _dot_text(text: str) -> str:
    """Escape ``text`` for a double-quoted DOT string (the escaping is one-to-one)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unique_ids(keys: Iterable[str]) -> list[str]:
    ids: list[str] = []
    taken: set[str] = set()
    for key in keys:
        candidate, count = key, 1
        while candidate in taken:
            count += 1
            candidate = f"{key}~{count}"
        taken.add(candidate)
        ids.append(candidate)
    return ids
