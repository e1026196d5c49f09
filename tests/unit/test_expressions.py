"""The safe expression evaluator: what it allows, what it rejects, and its run-time guards."""

from __future__ import annotations

import ast
import dataclasses
from collections import UserDict
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from servegraph.errors import GraphError
from servegraph.expressions import (
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_REPEAT,
    ExpressionError,
    compile_expression,
)

EVENT: dict[str, Any] = {
    "x": 5,
    "y": "b",
    "items": [3, 1, 2],
    "name": " Ada ",
    "csv": "a,b,c",
    "raw": b"a,b",
    "flag": True,
    "none": None,
    "nested": {"k": [10, 20]},
}

Oracle = Callable[[dict[str, Any]], object]

# Each expression next to the same expression written as Python: both must agree on EVENT.
ALLOWED: list[tuple[str, Oracle]] = [
    # literals and displays
    ("42", lambda event: 42),
    ("-1.5", lambda event: -1.5),
    ("1e3", lambda event: 1e3),
    ("2j", lambda event: 2j),
    ("'text'", lambda event: "text"),
    ("b'raw'", lambda event: b"raw"),
    ("True", lambda event: True),
    ("None", lambda event: None),
    ("[1, event['x']]", lambda event: [1, event["x"]]),
    ("(1, event['x'])", lambda event: (1, event["x"])),
    ("(1, (2, 3))", lambda event: (1, (2, 3))),
    ("()", lambda event: ()),
    ("{1, event['x']}", lambda event: {1, event["x"]}),
    ("{}", lambda event: {}),
    ("{'a': event['x'], 'b': [event['y']]}", lambda event: {"a": event["x"], "b": [event["y"]]}),
    ("{**event['nested'], 'z': 1}", lambda event: {**event["nested"], "z": 1}),
    # arithmetic
    ("event['x'] + 1", lambda event: event["x"] + 1),
    ("event['x'] - 1.5", lambda event: event["x"] - 1.5),
    ("event['x'] * 2", lambda event: event["x"] * 2),
    ("event['x'] / 2", lambda event: event["x"] / 2),
    ("event['x'] // 2", lambda event: event["x"] // 2),
    ("event['x'] % 3", lambda event: event["x"] % 3),
    ("event['x'] ** 2", lambda event: event["x"] ** 2),
    ("2 ** -1", lambda event: 2**-1),
    ("-event['x']", lambda event: -event["x"]),
    ("+event['x']", lambda event: +event["x"]),
    ("not event['x']", lambda event: not event["x"]),
    ("event['y'] + 'c'", lambda event: event["y"] + "c"),
    ("event['items'] * 2", lambda event: event["items"] * 2),
    ("3 * event['y']", lambda event: 3 * event["y"]),
    # comparisons
    ("event['x'] == 5", lambda event: event["x"] == 5),
    ("event['x'] != 5", lambda event: event["x"] != 5),
    ("event['x'] < 5", lambda event: event["x"] < 5),
    ("event['x'] <= 5", lambda event: event["x"] <= 5),
    ("event['x'] > 3", lambda event: event["x"] > 3),
    ("event['x'] >= 6", lambda event: event["x"] >= 6),
    ("'x' in event", lambda event: "x" in event),
    ("'q' not in event", lambda event: "q" not in event),
    ("event['none'] is None", lambda event: event["none"] is None),
    ("event['flag'] is not None", lambda event: event["flag"] is not None),
    ("1 < event['x'] < 10", lambda event: 1 < event["x"] < 10),
    ("1 < event['x'] > 10", lambda event: 1 < event["x"] > 10),
    ("0 <= 1 <= event['x'] != 4", lambda event: 0 <= 1 <= event["x"] != 4),
    # boolean operators and the conditional expression
    ("event['x'] > 3 and event['y'] != 'a'", lambda event: event["x"] > 3 and event["y"] != "a"),
    ("event['none'] or 'default'", lambda event: event["none"] or "default"),
    ("event['x'] and event['none'] and 1", lambda event: event["x"] and event["none"] and 1),
    ("0 or '' or event['y']", lambda event: 0 or "" or event["y"]),
    ("'big' if event['x'] > 3 else 'small'", lambda event: "big" if event["x"] > 3 else "small"),
    # subscripts and slices
    ("event['items'][0]", lambda event: event["items"][0]),
    ("event['items'][-1]", lambda event: event["items"][-1]),
    ("event['items'][1:]", lambda event: event["items"][1:]),
    ("event['items'][::-1]", lambda event: event["items"][::-1]),
    ("event['items'][:event['x'] - 4]", lambda event: event["items"][: event["x"] - 4]),
    ("event['nested']['k'][1]", lambda event: event["nested"]["k"][1]),
    ("event['items'][event['x'] - 4]", lambda event: event["items"][event["x"] - 4]),
    # builtins
    ("len(event['items']) * 2", lambda event: len(event["items"]) * 2),
    ("abs(-event['x'])", lambda event: abs(-event["x"])),
    ("min(event['items'])", lambda event: min(event["items"])),
    ("max(1, event['x'])", lambda event: max(1, event["x"])),
    ("sum(event['items'])", lambda event: sum(event["items"])),
    ("round(2.567, 2)", lambda event: round(2.567, 2)),
    ("sorted(event['items'], reverse=True)", lambda event: sorted(event["items"], reverse=True)),
    ("str(event['x'])", lambda event: str(event["x"])),
    ("int('7') + event['x']", lambda event: int("7") + event["x"]),
    ("float(event['x'])", lambda event: float(event["x"])),
    ("bool(event['none'])", lambda event: bool(event["none"])),
    ("list(event['y'])", lambda event: list(event["y"])),
    ("dict(a=event['x'])", lambda event: {"a": event["x"]}),
    ("tuple(event['items'])", lambda event: tuple(event["items"])),
    ("set(event['items'])", lambda event: set(event["items"])),
    ("any(event['items'])", lambda event: any(event["items"])),
    ("all([event['x'], 0])", lambda event: all([event["x"], 0])),
    # methods
    ("event.get('x')", lambda event: event.get("x")),
    ("event.get('a', 0) + 1", lambda event: event.get("a", 0) + 1),
    ("sorted(event.keys())", lambda event: sorted(event.keys())),
    ("len(event.values())", lambda event: len(event.values())),
    ("list(event['nested'].items())", lambda event: list(event["nested"].items())),
    ("event['name'].lower()", lambda event: event["name"].lower()),
    ("event['name'].upper()", lambda event: event["name"].upper()),
    ("event['name'].strip()", lambda event: event["name"].strip()),
    ("event['csv'].startswith('a')", lambda event: event["csv"].startswith("a")),
    ("event['csv'].endswith(('x', 'c'))", lambda event: event["csv"].endswith(("x", "c"))),
    ("event['csv'].split(',', maxsplit=1)", lambda event: event["csv"].split(",", maxsplit=1)),
    ("event['csv'].replace(',', ';')", lambda event: event["csv"].replace(",", ";")),
    ("event['raw'].split(b',')", lambda event: event["raw"].split(b",")),
]


@pytest.mark.parametrize(("text", "oracle"), ALLOWED, ids=[text for text, _ in ALLOWED])
def test_allowed_construct_evaluates_like_python(text: str, oracle: Oracle) -> None:
    expected = oracle(EVENT)
    result = compile_expression(text)(EVENT)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        ("(event + 1)", 5, 6),
        ("event['x'] > 3 and event['y'] != 'a'", {"x": 4, "y": "b"}, True),
        ("({'tag': 'something'})", {}, {"tag": "something"}),
        ("(sorted(event.keys()))", {"b": 1, "a": 2}, ["a", "b"]),
        ("len(event['items']) * 2", {"items": [1, 2]}, 4),
        ("event.get('a', 0) + 1", {}, 1),
    ],
)
def test_mlrun_style_expression_evaluates(text: str, event: Any, expected: object) -> None:
    assert compile_expression(text)(event) == expected


def test_leading_blanks_are_accepted_as_eval_accepts_them() -> None:
    assert compile_expression("  \tevent + 1")(1) == 2


def test_multi_line_expression_evaluates() -> None:
    assert compile_expression("(\n  event['x']\n  + 1\n)")(EVENT) == 6


def test_and_stops_at_the_first_false_value() -> None:
    assert compile_expression("event['none'] and event['missing']")(EVENT) is None


def test_or_stops_at_the_first_true_value() -> None:
    assert compile_expression("event['flag'] or event['missing']")(EVENT) is True


def test_long_and_chain_stops_at_the_first_false_value() -> None:
    assert compile_expression("1 and 0 and event['missing']")(EVENT) == 0


def test_conditional_evaluates_only_the_chosen_branch() -> None:
    assert compile_expression("event['x'] if event['flag'] else event['missing']")(EVENT) == 5


def test_comparison_chain_stops_at_the_first_false_comparison() -> None:
    assert compile_expression("3 < 2 < event['missing']")(EVENT) is False


def test_displays_build_a_fresh_object_per_call() -> None:
    expression = compile_expression("({'tag': 'something', 'items': []})")
    first, second = expression(None), expression(None)
    assert first == second
    assert first is not second
    assert first["items"] is not second["items"]


def test_missing_key_raises_key_error_at_run_time() -> None:
    with pytest.raises(KeyError):
        compile_expression("event['missing']")(EVENT)


def test_names_are_bound_positionally() -> None:
    expression = compile_expression("body['x'] * factor", names=("body", "factor"))
    assert expression({"x": 2}, 10) == 20
    assert expression.names == ("body", "factor")


def test_expression_without_names_takes_no_values() -> None:
    assert compile_expression("1 + 2", names=())() == 3


def test_wrong_number_of_values_raises_type_error() -> None:
    with pytest.raises(TypeError, match="takes 1 value"):
        compile_expression("event")(1, 2)


def test_expression_keeps_its_text_and_is_frozen() -> None:
    expression = compile_expression("(event + 1)")
    assert expression.text == "(event + 1)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        expression.text = "event - 1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("lambda: 1", "lambda"),
        ("[x for x in event]", "list comprehension"),
        ("{x for x in event}", "set comprehension"),
        ("{x: 1 for x in event}", "dict comprehension"),
        ("any(x for x in event)", "generator expression"),
        ("(y := 1)", ":="),
        ("f'{event}'", "f-string"),
        ("[*event]", "starred"),
        ("len(*event)", "starred"),
        ("dict(**event)", "'**' unpacking"),
        ("await event", "await"),
        ("(yield)", "yield"),
        ("(yield from event)", "yield from"),
        ("event | 1", "'|'"),
        ("event & 1", "'&'"),
        ("event ^ 1", "'^'"),
        ("event << 1", "'<<'"),
        ("event >> 1", "'>>'"),
        ("event @ event", "'@'"),
        ("~event", "'~'"),
        ("...", "Ellipsis"),
        ("event.get", "'get' must be called"),
        ("event.format()", "'format'"),
        ("event.pop('x')", "'pop'"),
        ("event['x'].__class__", "'__class__'"),
        ("event._private()", "'_private'"),
        ("len", "'len' can only be called"),
        ("event(1)", "calling 'event'"),
        ("event['f'](1)", "calling the result of an expression"),
        ("getattr(event, 'x')", "calling 'getattr'"),
        ("eval('1')", "calling 'eval'"),
        ("exec('1')", "calling 'exec'"),
        ("compile('1', '', 'eval')", "calling 'compile'"),
        ("type(event)", "calling 'type'"),
        ("print(event)", "calling 'print'"),
    ],
)
def test_rejected_construct_raises_naming_it(text: str, construct: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert construct in caught.value.reason
    assert construct in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "event.__class__",
        "().__class__.__bases__",
        "().__class__.__base__.__subclasses__()",
        "[].__class__.__mro__[1].__subclasses__()",
        "'{0.__class__}'.format(event)",
        "str.format('{0.__class__}', event)",
        "open('x')",
        "lambda: 1",
        "[x for x in event]",
        "__builtins__",
        "globals()",
        "vars(event)",
        "event.get.__self__",
        "len.__self__",
    ],
)
def test_escape_attempt_is_rejected(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text)


def test_unknown_name_is_rejected_and_the_bound_names_are_listed() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("user + 1")
    assert "'user'" in caught.value.reason
    assert "event" in caught.value.allowed


def test_only_the_given_names_are_known() -> None:
    with pytest.raises(ExpressionError, match="'event'"):
        compile_expression("event", names=("body",))


def test_error_says_what_where_and_what_is_allowed() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("event.__class__")
    message = str(caught.value)
    assert "'__class__'" in message
    assert "column 7" in message
    assert "allowed: the methods get, keys" in message


def test_error_column_counts_characters_not_bytes() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("'é' + event.__x")
    assert (caught.value.line, caught.value.column) == (1, 13)


def test_error_column_counts_the_leading_blanks() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("  open('x')")
    assert caught.value.column == 3


def test_error_on_a_later_line_gives_the_line() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("(\n event +\n  event.__y)")
    assert (caught.value.line, caught.value.column) == (3, 9)
    assert "line 3, column 9" in str(caught.value)


def test_expression_error_is_a_graph_error_with_one_problem() -> None:
    with pytest.raises(GraphError) as caught:
        compile_expression("open('x')")
    assert isinstance(caught.value, ExpressionError)
    assert len(caught.value.problems) == 1


def test_syntax_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="syntax error") as caught:
        compile_expression("event +")
    assert isinstance(caught.value.__cause__, SyntaxError)


def test_statement_is_a_syntax_error() -> None:
    with pytest.raises(ExpressionError, match="syntax error"):
        compile_expression("import os")


@pytest.mark.parametrize(
    "text",
    [
        "-" * (MAX_DEPTH + 1) + "event",
        "event" + " + 1" * (MAX_DEPTH + 1),
        "(" * 300 + "event" + ")" * 300,
    ],
    ids=["unary", "binary", "parentheses"],
)
def test_deep_nesting_is_rejected(text: str) -> None:
    with pytest.raises(ExpressionError, match="nest"):
        compile_expression(text)


def test_exponent_at_the_limit_is_allowed() -> None:
    assert compile_expression(f"event ** {MAX_EXPONENT}")(2) == 2**MAX_EXPONENT


@pytest.mark.parametrize(
    ("text", "event"),
    [("event ** 10001", 2), ("2 ** event", 10**9), ("1.0001 ** event", 10**6)],
)
def test_huge_exponent_raises_value_error(text: str, event: int) -> None:
    with pytest.raises(ValueError, match="exponent"):
        compile_expression(text)(event)


def test_huge_int_power_raises_value_error() -> None:
    with pytest.raises(ValueError, match="bits"):
        compile_expression("(event ** 1000) ** 5000")(10)


@pytest.mark.parametrize(
    ("text", "event"),
    [("'a' * event", 10**9), ("event * b'a'", 10**9), ("[0, 1] * event", MAX_REPEAT)],
)
def test_huge_repetition_raises_value_error(text: str, event: int) -> None:
    with pytest.raises(ValueError, match="repeating"):
        compile_expression(text)(event)


def test_percent_string_formatting_raises_type_error() -> None:
    with pytest.raises(TypeError, match="formatting"):
        compile_expression("'%s!' % event")("x")


def test_merging_a_non_mapping_raises_type_error() -> None:
    with pytest.raises(TypeError, match="mapping"):
        compile_expression("{**event}")([1])


@pytest.mark.parametrize(
    ("text", "event"),
    [("event.lower()", 5), ("event.get('x')", [1]), ("event.keys()", "text")],
)
def test_method_on_the_wrong_kind_of_value_raises_type_error(text: str, event: object) -> None:
    with pytest.raises(TypeError, match="needs a"):
        compile_expression(text)(event)


@pytest.mark.parametrize(
    "event", [UserDict({"a": 1}), MappingProxyType({"a": 1})], ids=["UserDict", "proxy"]
)
def test_mapping_methods_accept_any_mapping(event: Any) -> None:
    assert compile_expression("(event.get('a'), list(event.keys()))")(event) == (1, ["a"])


@pytest.mark.parametrize("names", [("len",), ("1x",), ("class",), ("a", "a")])
def test_invalid_names_raise_value_error(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"cannot bind|repeated"):
        compile_expression("1", names=names)


def test_names_as_a_string_raise_type_error() -> None:
    with pytest.raises(TypeError, match="sequence"):
        compile_expression("1", names="event")


def _reachable(value: object, seen: set[int]) -> list[object]:
    """Everything a closure tree holds on to: closure cells, containers and their contents."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    found: list[object] = [value]
    children: list[object] = []
    cells = getattr(value, "__closure__", None) or ()
    children.extend(cell.cell_contents for cell in cells)
    if isinstance(value, list | tuple | set):
        children.extend(value)
    if isinstance(value, dict):
        children.extend(value.items())
    for child in children:
        found.extend(_reachable(child, seen))
    return found


def test_compiled_expression_keeps_no_syntax_tree() -> None:
    expression = compile_expression("[event.get('a', 0) + 1, -event['x'], event['y'][1:]]")
    held = _reachable(expression._evaluate, set())
    assert len(held) > 1
    assert not any(isinstance(item, ast.AST) for item in held)


def test_evaluates_many_events() -> None:
    keep = compile_expression("event['x'] > 3 and event['y'] != 'a'")
    events = [{"x": index % 10, "y": "ab"[index % 2]} for index in range(20_000)]
    assert sum(1 for event in events if keep(event)) == 6_000
