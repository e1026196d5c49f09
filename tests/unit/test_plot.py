"""Tests for servegraph.graph.plot: Mermaid and DOT structure, escaping, SVG via Graphviz."""

from __future__ import annotations

import re
import shutil

import pytest

from servegraph import Event, Graph, GraphSpec, StepSpec
from servegraph.graph.plot import render, to_dot, to_mermaid, to_svg

# -- steps used by the graphs (module level, so they have import paths) ------------------------


class Linear:
    def do(self, body: int) -> int:
        return body


class Scaled:
    def predict(self, body: int) -> int:
        return body * 2


def double(body: int) -> int:
    return body * 2


def catch(event: Event) -> Event:
    return event


# -- small parsers: turn the text back into nodes and edges keyed by label ---------------------

MermaidEdge = tuple[str, str, str | None, str]
"""(source label, arrow, edge label or None, target label)."""

DotEdge = tuple[str, str, dict[str, str]]
"""(source id, target id, attributes)."""

_MERMAID_NODE = re.compile(r'^    (n\d+)([\[({]+)"(.*)"([\])}]+)(?::::(\w+))?$')
_MERMAID_EDGE = re.compile(r'^    (n\d+) (-->|-\.->)(?:\|"(.*)"\|)? (n\d+)$')
_DOT_STRING = r'"((?:[^"\\]|\\.)*)"'
_DOT_NODE = re.compile(rf"^    {_DOT_STRING} \[(.*)\];$")
_DOT_EDGE = re.compile(rf"^    {_DOT_STRING} -> {_DOT_STRING}(?: \[(.*)\])?;$")
_DOT_ATTRIBUTE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def mermaid_nodes(text: str) -> dict[str, tuple[str, str, str | None]]:
    """Map node id to (label, opening bracket, class) for a Mermaid flowchart."""
    nodes: dict[str, tuple[str, str, str | None]] = {}
    for line in text.splitlines():
        match = _MERMAID_NODE.match(line)
        if match:
            nodes[match[1]] = (match[3], match[2], match[5])
    return nodes


def mermaid_edges(text: str) -> list[MermaidEdge]:
    """Return the edges of a Mermaid flowchart, with node labels in place of ids."""
    labels = {node_id: node[0] for node_id, node in mermaid_nodes(text).items()}
    edges: list[MermaidEdge] = []
    for line in text.splitlines():
        match = _MERMAID_EDGE.match(line)
        if match:
            edges.append((labels[match[1]], match[2], match[3], labels[match[4]]))
    return edges


def dot_attributes(text: str | None) -> dict[str, str]:
    return {key: value.strip('"') for key, value in _DOT_ATTRIBUTE.findall(text or "")}


def dot_nodes(text: str) -> dict[str, dict[str, str]]:
    """Map (escaped) node id to its attributes for a DOT digraph."""
    nodes: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = _DOT_NODE.match(line)
        if match:
            nodes[match[1]] = dot_attributes(match[2])
    return nodes


def dot_edges(text: str) -> list[DotEdge]:
    """Return the edges of a DOT digraph as (escaped) ids and attributes."""
    edges: list[DotEdge] = []
    for line in text.splitlines():
        match = _DOT_EDGE.match(line)
        if match:
            edges.append((match[1], match[2], dot_attributes(match[3])))
    return edges


# -- graphs ------------------------------------------------------------------------------------


def chain_graph() -> Graph:
    graph = Graph()
    graph.to(Linear, name="linear").to(double, name="double").respond()
    return graph


def error_graph() -> Graph:
    graph = Graph()
    graph.to(Linear, name="a").to(double, name="b").respond()
    graph["a"].error_handler(catch, name="catch", full_event=True)
    graph.error_handler(catch, name="oops", full_event=True)
    return graph


def router_in_flow_graph() -> Graph:
    graph = Graph()
    graph.to(Linear, name="a")
    router = graph.add_router("r", after="a", default_route="m1", responder=True)
    router.add_route("m1", Linear).add_route("m2", Scaled, handler="predict")
    return graph


def router_graph() -> Graph:
    graph = Graph.router()
    graph.add_route("m1", Linear)
    graph.add_route("m2", Scaled, handler="predict")
    return graph


# -- render --------------------------------------------------------------------------------------


def test_render_dispatches_on_format() -> None:
    spec = chain_graph().spec
    assert render(spec, "mermaid") == to_mermaid(spec)
    assert render(spec, "dot") == to_dot(spec)


def test_render_rejects_unknown_format_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"'png'.*mermaid, dot, svg"):
        render(chain_graph().spec, "png")


def test_graph_plot_uses_render() -> None:
    graph = chain_graph()
    assert graph.plot() == to_mermaid(graph.spec)
    assert graph.plot("dot") == to_dot(graph.spec)


def test_output_is_deterministic_and_in_spec_order() -> None:
    spec = error_graph().spec
    assert to_mermaid(spec) == to_mermaid(error_graph().spec)
    assert to_dot(spec) == to_dot(error_graph().spec)
    labels = [node[0] for node in mermaid_nodes(to_mermaid(spec)).values()]
    assert labels[:5] == ["source", "a<br>Linear", "b<br>double", "catch<br>catch", "oops<br>catch"]


# -- Mermaid -----------------------------------------------------------------------------------


def test_mermaid_chain_edges_and_labels() -> None:
    text = to_mermaid(chain_graph().spec)
    assert text.startswith("flowchart LR\n")
    assert mermaid_edges(text) == [
        ("source", "-->", None, "linear<br>Linear"),
        ("linear<br>Linear", "-->", None, "double<br>double"),
        ("double<br>double", "-->", None, "response"),
    ]


def test_mermaid_source_is_a_circle_and_response_a_double_circle() -> None:
    nodes = {
        label: shape for label, shape, _ in mermaid_nodes(to_mermaid(chain_graph().spec)).values()
    }
    assert nodes["source"] == "(("
    assert nodes["response"] == "((("


def test_mermaid_responder_has_its_own_shape_and_class() -> None:
    text = to_mermaid(chain_graph().spec)
    nodes = {label: (shape, cls) for label, shape, cls in mermaid_nodes(text).values()}
    assert nodes["double<br>double"] == ("([", "responder")
    assert nodes["linear<br>Linear"] == ("[", None)
    assert "classDef responder " in text


def test_mermaid_error_handlers_get_dashed_edges_not_entry_edges() -> None:
    edges = mermaid_edges(to_mermaid(error_graph().spec))
    assert ("a<br>Linear", "-.->", "on error", "catch<br>catch") in edges
    assert ("source", "-.->", "on error (graph)", "oops<br>catch") in edges
    assert ("source", "-->", None, "catch<br>catch") not in edges
    assert ("source", "-->", None, "oops<br>catch") not in edges


def test_mermaid_router_in_flow_is_a_rhombus_with_labelled_route_edges() -> None:
    text = to_mermaid(router_in_flow_graph().spec)
    nodes = {label: (shape, cls) for label, shape, cls in mermaid_nodes(text).values()}
    assert nodes["r"] == ("{", "responder")
    assert mermaid_edges(text) == [
        ("source", "-->", None, "a<br>Linear"),
        ("a<br>Linear", "-->", None, "r"),
        ("r", "-->", "m1 (default)", "m1<br>Linear"),
        ("r", "-->", "m2", "m2<br>Scaled.predict"),
        ("r", "-->", None, "response"),
    ]


def test_mermaid_router_topology() -> None:
    assert mermaid_edges(to_mermaid(router_graph().spec)) == [
        ("source", "-->", None, "router"),
        ("router", "-->", "m1", "m1<br>Linear"),
        ("router", "-->", "m2", "m2<br>Scaled.predict"),
    ]


def test_mermaid_uses_generated_ids_and_escapes_labels() -> None:
    graph = Graph()
    graph.to(double, name='my "odd" step.v-1 #x <b>`')
    text = to_mermaid(graph.spec)
    assert (
        '    n1["my #quot;odd#quot; step.v-1 #35;x #lt;b#gt;#96;<br>double"]' in text.splitlines()
    )
    assert "    n0 --> n1" in text.splitlines()


def test_mermaid_missing_names_are_drawn_dashed() -> None:
    spec = GraphSpec(steps=(StepSpec(name="b", after=("ghost",)),))
    text = to_mermaid(spec)
    assert ("ghost<br>(missing)", "-->", None, "b") in mermaid_edges(text)
    assert "classDef missing stroke-dasharray:5 5" in text


# -- DOT ---------------------------------------------------------------------------------------


def test_dot_chain_edges() -> None:
    text = to_dot(chain_graph().spec)
    assert text.startswith("digraph servegraph {\n")
    assert text.endswith("}\n")
    assert [(source, target) for source, target, _ in dot_edges(text)] == [
        ("source", "linear"),
        ("linear", "double"),
        ("double", "response"),
    ]


def test_dot_node_shapes_and_labels() -> None:
    nodes = dot_nodes(to_dot(chain_graph().spec))
    assert nodes["source"] == {"label": "source", "shape": "circle"}
    assert nodes["linear"] == {"label": "linear\\nLinear"}
    assert nodes["double"] == {
        "label": "double\\ndouble",
        "style": "rounded,bold",
        "peripheries": "2",
    }
    assert nodes["response"] == {"label": "response", "shape": "doublecircle"}


def test_dot_error_edges_are_dashed_and_labelled() -> None:
    edges = dot_edges(to_dot(error_graph().spec))
    assert ("a", "catch", {"label": "on error", "style": "dashed"}) in edges
    assert ("source", "oops", {"label": "on error (graph)", "style": "dashed"}) in edges
    assert ("source", "catch", {}) not in edges
    assert ("source", "oops", {}) not in edges


def test_dot_router_is_a_diamond_with_route_nodes() -> None:
    text = to_dot(router_in_flow_graph().spec)
    nodes = dot_nodes(text)
    assert nodes["r"]["shape"] == "diamond"
    assert nodes["r/m2"] == {"label": "m2\\nScaled.predict"}
    assert ("r", "r/m1", {"label": "m1 (default)"}) in dot_edges(text)
    assert ("r", "r/m2", {"label": "m2"}) in dot_edges(text)
    assert ("r", "response", {}) in dot_edges(text)


def test_dot_router_topology() -> None:
    edges = dot_edges(to_dot(router_graph().spec))
    assert edges == [
        ("source", "router", {}),
        ("router", "router/m1", {"label": "m1"}),
        ("router", "router/m2", {"label": "m2"}),
    ]


def test_dot_quotes_and_escapes_awkward_names() -> None:
    graph = Graph()
    graph.to(Linear, name="first step").to(double, name='a "b"\\c.d-e')
    text = to_dot(graph.spec)
    lines = text.splitlines()
    assert '    "a \\"b\\"\\\\c.d-e" [label="a \\"b\\"\\\\c.d-e\\ndouble"];' in lines
    assert '    "first step" -> "a \\"b\\"\\\\c.d-e";' in lines


def test_dot_ids_stay_unique_when_a_step_is_named_like_a_special_node() -> None:
    graph = Graph()
    graph.to(double, name="source").respond()
    edges = dot_edges(to_dot(graph.spec))
    assert edges == [("source", "source~2", {}), ("source~2", "response", {})]


# -- SVG ---------------------------------------------------------------------------------------


def test_svg_is_drawn_by_graphviz_or_needs_it_clearly() -> None:
    spec = router_in_flow_graph().spec
    if shutil.which("dot") is None:
        with pytest.raises(FileNotFoundError, match="Graphviz 'dot' program is needed"):
            render(spec, "svg")
    else:
        svg = render(spec, "svg")
        assert svg.startswith("<?xml") or "<svg" in svg
        assert "<svg" in svg


def test_svg_without_graphviz_raises_file_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"install graphviz \(apt-get install graphviz\)"):
        to_svg(chain_graph().spec)


def test_a_queue_step_is_drawn_as_a_cylinder_with_its_stream() -> None:
    graph = Graph()
    graph.to("json:dumps", name="a").to_queue("q", "redis://h:6379/ev").to("json:loads", name="b")
    assert '[("q<br>redis://h:6379/ev")]' in graph.plot()
    assert '"q" [label="q\\nredis://h:6379/ev", shape=cylinder];' in graph.plot("dot")
