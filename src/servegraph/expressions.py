"""Safe evaluation of the small expressions that serving-graph specs carry.

MLRun specs hold handlers, maps and filters as Python source, e.g. ``"(event + 1)"`` or
``"event['x'] > 3"``. Such text never reaches ``eval``, ``exec`` or ``compile``: it is parsed
with ``ast.parse(text, mode="eval")``, every node is checked once, and the tree is turned into
nested closures that run per event without walking the tree again.

The grammar is a small subset of Python expressions:

- literals (numbers, strings, bytes, ``True``, ``False``, ``None``) and list, tuple, set and dict
  displays, including ``{**event, 'key': 1}`` to merge a mapping into a new dict;
- arithmetic ``+ - * / // % **``, unary ``- + not``, comparisons ``== != < <= > >= in``,
  ``not in``, ``is``, ``is not`` (chained too), ``and``/``or`` and ``a if test else b``;
- subscripts and slices, e.g. ``event['items'][1:3]``, and the bound names (``event``);
- calls of the builtins in ``BUILTINS`` and of the methods in ``METHODS``: ``get``, ``keys``,
  ``values`` and ``items`` on mappings, and ``lower``, ``upper``, ``strip``, ``startswith``,
  ``endswith``, ``split`` and ``replace`` on str and bytes, e.g. ``event.get('a', 0)``.

Everything else fails at compile time with an ``ExpressionError``: other names and calls, builtins
used without a call, attribute access other than those method calls, names starting with ``_``,
lambdas, comprehensions and generator expressions (they would bring scopes and loops for little
gain), f-strings (their format specs can allocate without bound; use ``str()`` and ``+``),
``:=``, ``*``/``**`` argument unpacking, ``await``, ``yield``, bitwise operators and ``@``.

Two run-time guards stop the obvious amplifiers with a ValueError: ``**`` with an exponent above
``MAX_EXPONENT`` (or an int result above ``MAX_POWER_BITS`` bits), and ``*`` repeating a str,
bytes, list or tuple beyond ``MAX_REPEAT`` items. ``%`` string formatting raises TypeError.
Expression text comes from the graph spec, not from events; these guards stop accidents, they do
not bound CPU or memory in general.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from servegraph.errors import GraphError, Problem

MAX_EXPONENT = 10_000
"""Largest exponent that ``**`` accepts."""
MAX_POWER_BITS = 1_000_000
"""Largest int result, in bits, that ``**`` may produce."""
MAX_REPEAT = 10_000_000
"""Largest length that ``*`` may give a repeated str, bytes, list or tuple."""
MAX_DEPTH = 100
"""Deepest nesting of an expression tree; deeper trees would overflow the stack per event."""

_BUILTIN_NAMES = "len abs min max sum round sorted str int float bool list dict tuple set any all"
BUILTINS: Mapping[str, Callable[..., Any]] = {
    name: getattr(builtins, name) for name in _BUILTIN_NAMES.split()
}
"""The builtins an expression may call."""

_MAPPING_METHODS = ("get", "keys", "values", "items")
_TEXT_METHODS = ("lower", "upper", "strip", "startswith", "endswith", "split", "replace")
METHODS: tuple[str, ...] = _MAPPING_METHODS + _TEXT_METHODS
"""The methods an expression may call: the first four on mappings, the rest on str and bytes."""


def _unbound(name: str, *kinds: type) -> dict[type, Callable[..., Any]]:
    return {kind: getattr(kind, name) for kind in kinds}


# Method name -> {receiver type: unbound method}, tried in order; no getattr per event.
_RECEIVERS = {name: _unbound(name, dict, Mapping) for name in _MAPPING_METHODS} | {
    name: _unbound(name, str, bytes) for name in _TEXT_METHODS
}

_Env = tuple[Any, ...]
_Eval = Callable[[_Env], Any]


class ExpressionError(GraphError):
    """An expression that is not allowed or does not parse, raised when it is compiled.

    Fields: ``text`` (the expression), ``reason`` (what is wrong), ``line`` and ``column``
    (1-based, as in editors and ``SyntaxError``) and ``allowed`` (what may be written instead).

    Example:
        >>> try:
        ...     compile_expression("event.__class__")
        ... except ExpressionError as error:
        ...     (error.reason, error.column)
        ("attribute '__class__' is not allowed (names starting with '_' never are)", 7)
    """

    def __init__(self, text: str, reason: str, *, line: int, column: int, allowed: str) -> None:
        self.text = text
        self.reason = reason
        self.line = line
        self.column = column
        self.allowed = allowed
        where = f"line {line}, column {column}" if "\n" in text.strip() else f"column {column}"
        message = f"expression {text!r}: {reason} at {where}; allowed: {allowed}"
        super().__init__([Problem(None, message)])

    def __repr__(self) -> str:
        return (
            f"ExpressionError(text={self.text!r}, reason={self.reason!r}, line={self.line!r}, "
            f"column={self.column!r}, allowed={self.allowed!r})"
        )


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; call it with one value per bound name, in order.

    Build it with ``compile_expression``, not directly.

    Example:
        >>> total = compile_expression("a + b", names=("a", "b"))
        >>> total(2, 3), total.text
        (5, 'a + b')
    """

    text: str
    names: tuple[str, ...]
    _evaluate: _Eval = field(repr=False, compare=False)

    def __call__(self, *values: Any) -> Any:
        """Evaluate the expression with ``values`` bound to ``names`` positionally.

        Raises:
            TypeError: the number of values differs from the number of names.
        """
        if len(values) != len(self.names):
            message = (
                f"expression {self.text!r} takes {len(self.names)} value(s) "
                f"({', '.join(self.names)}), got {len(values)}"
            )
            raise TypeError(message)
        return self._evaluate(values)


def compile_expression(text: str, *, names: Sequence[str] = ("event",)) -> Expression:
    """Parse and check ``text`` once and return a callable ``Expression``.

    Args:
        text: a Python expression in the grammar of this module; surrounding parentheses, as in
            MLRun's ``"(event + 1)"``, are ordinary syntax.
        names: the names the expression may use, bound positionally when it is called.

    Returns:
        The compiled expression.

    Raises:
        ExpressionError: ``text`` does not parse or uses anything outside the grammar.
        ValueError: a name in ``names`` is not an identifier, is repeated or is a builtin.

    Example:
        >>> compile_expression("(event + 1)")(5)
        6
        >>> compile_expression("event.get('a', 0) + 1")({"a": 41})
        42
        >>> compile_expression("open('x')")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        servegraph.expressions.ExpressionError: calling 'open' is not allowed
    """
    bound = _check_names(names)
    # Python drops leading blanks of an expression and so must we; the shift keeps the
    # columns of error messages true to ``text``.
    source = text.lstrip(" \t")
    shift = len(text) - len(source)
    compiler = _Compiler(text, bound, shift)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        line = exc.lineno or 1
        column = max(exc.offset or 1, 1) + (shift if line == 1 else 0)
        reason = f"syntax error: {exc.msg}"
        raise ExpressionError(
            text, reason, line=line, column=column, allowed=compiler.grammar
        ) from exc
    except (RecursionError, MemoryError) as exc:  # the parser's own limits on nesting
        reason = "nesting too deep to parse"
        raise ExpressionError(text, reason, line=1, column=1, allowed=compiler.grammar) from exc
    return Expression(text, bound, compiler.build(tree.body, 0))


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        message = f"names must be a sequence of names, not the string {names!r}"
        raise TypeError(message)
    bound = tuple(names)
    for name in bound:
        if not name.isidentifier() or keyword.iskeyword(name) or name in BUILTINS:
            message = f"cannot bind {name!r}: not an identifier, or a keyword or allowed builtin"
            raise ValueError(message)
    if len(set(bound)) != len(bound):
        message = f"names are repeated: {bound!r}"
        raise ValueError(message)
    return bound


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, int | float) and exponent > MAX_EXPONENT:
        message = f"exponent {exponent} is above the limit of {MAX_EXPONENT}"
        raise ValueError(message)
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and base.bit_length() * exponent > MAX_POWER_BITS
    ):
        message = f"** would give an int above the limit of {MAX_POWER_BITS} bits"
        raise ValueError(message)
    return base**exponent


_SEQUENCES = (str, bytes, list, tuple)


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, _SEQUENCES) and isinstance(right, int):
        _check_repeat(len(left), right)
    elif isinstance(right, _SEQUENCES) and isinstance(left, int):
        _check_repeat(len(right), left)
    return left * right


def _check_repeat(length: int, times: int) -> None:
    if length * times > MAX_REPEAT:
        message = f"repeating {length} items {times} times exceeds the limit of {MAX_REPEAT}"
        raise ValueError(message)


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes):
        message = "'%' string formatting is not allowed in expressions; use str() and +"
        raise TypeError(message)
    return left % right


# fmt: off
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: _modulo, ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda item, container: item in container,
    ast.NotIn: lambda item, container: item not in container,
}
_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
    ast.MatMult: "@", ast.Invert: "~",
}
_CONSTRUCTS: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda", ast.ListComp: "list comprehension", ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension", ast.GeneratorExp: "generator expression",
    ast.NamedExpr: "assignment expression ':='", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.Starred: "starred '*' unpacking", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield from",
}
# fmt: on
_LITERALS = (bool, int, float, complex, str, bytes, type(None))


class _Compiler:
    """Checks an expression tree and builds its closure tree; used once per expression."""

    def __init__(self, text: str, names: tuple[str, ...], shift: int) -> None:
        self.text = text
        self.lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.shift = shift
        self.slots = {name: index for index, name in enumerate(names)}
        self.constants: dict[_Eval, Any] = {}
        self.calls = f"calls of {', '.join(BUILTINS)} and of the methods {', '.join(METHODS)}"
        bound = ", ".join(names) or "(none)"
        self.grammar = (
            "literals, list/tuple/set/dict displays, + - * / // % **, unary - + not, comparisons, "
            f"and/or, 'a if test else b', subscripts and slices, the names {bound}, {self.calls}"
        )

    def fail(
        self, node: ast.expr | ast.keyword, reason: str, allowed: str | None = None
    ) -> NoReturn:
        self.fail_at(node.lineno, node.col_offset, reason, allowed)

    def fail_at(self, line: int, offset: int, reason: str, allowed: str | None = None) -> NoReturn:
        # ast offsets count UTF-8 bytes; columns count characters.
        source = self.lines[line - 1] if line <= len(self.lines) else ""
        shift = self.shift if line == 1 else 0
        column = len(source[shift:].encode()[:offset].decode(errors="ignore")) + shift + 1
        raise ExpressionError(
            self.text, reason, line=line, column=column, allowed=allowed or self.grammar
        )

    def constant(self, value: Any) -> _Eval:
        def evaluate(env: _Env) -> Any:
            return value

        self.constants[evaluate] = value
        return evaluate

    def build(self, node: ast.expr, depth: int) -> _Eval:
        if depth >= MAX_DEPTH:
            self.fail(node, f"nesting deeper than {MAX_DEPTH} levels", "a flatter expression")
        depth += 1
        match node:
            case ast.Constant(value=value):
                if not isinstance(value, _LITERALS):
                    self.fail(node, f"the literal {value!r} is not allowed")
                return self.constant(value)
            case ast.Name(id=name):
                return self.name(node, name)
            case ast.BinOp():
                return self.binary(node, depth)
            case ast.UnaryOp():
                return self.unary(node, depth)
            case ast.BoolOp():
                return self.boolean(node, depth)
            case ast.Compare():
                return self.compare(node, depth)
            case ast.IfExp():
                test, body, orelse = (
                    self.build(part, depth) for part in (node.test, node.body, node.orelse)
                )
                return lambda env: body(env) if test(env) else orelse(env)
            case ast.Subscript():
                return self.subscript(node, depth)
            case ast.Slice():
                parts = [
                    self.constant(None) if part is None else self.build(part, depth)
                    for part in (node.lower, node.upper, node.step)
                ]
                if all(part in self.constants for part in parts):
                    return self.constant(slice(*(self.constants[part] for part in parts)))
                lower, upper, step = parts
                return lambda env: slice(lower(env), upper(env), step(env))
            case ast.List() | ast.Tuple() | ast.Set():
                return self.display(node, depth)
            case ast.Dict():
                return self.mapping(node, depth)
            case ast.Call():
                return self.call(node, depth)
            case ast.Attribute():
                self.check_method(node, called=False)  # always raises: methods must be called
        self.fail(node, f"{_CONSTRUCTS.get(type(node), type(node).__name__)} is not allowed")

    def name(self, node: ast.Name, name: str) -> _Eval:
        if name in self.slots:
            return operator.itemgetter(self.slots[name])
        if name in BUILTINS:
            self.fail(node, f"the builtin {name!r} can only be called", self.calls)
        bound = ", ".join(self.slots) or "(none)"
        self.fail(node, f"the name {name!r} is not allowed", f"the names {bound} and {self.calls}")

    def binary(self, node: ast.BinOp, depth: int) -> _Eval:
        function = _BINARY.get(type(node.op))
        if function is None:
            self.fail(
                node, f"the operator {_SYMBOLS[type(node.op)]!r} is not allowed", "+ - * / // % **"
            )
        left, right = self.build(node.left, depth), self.build(node.right, depth)
        if right in self.constants:
            value = self.constants[right]
            return lambda env: function(left(env), value)
        return lambda env: function(left(env), right(env))

    def unary(self, node: ast.UnaryOp, depth: int) -> _Eval:
        function = _UNARY.get(type(node.op))
        if function is None:
            self.fail(
                node, f"the operator {_SYMBOLS[type(node.op)]!r} is not allowed", "unary - + not"
            )
        operand = self.build(node.operand, depth)
        if operand in self.constants and isinstance(self.constants[operand], int | float | complex):
            return self.constant(function(self.constants[operand]))  # a literal such as -1
        return lambda env: function(operand(env))

    def boolean(self, node: ast.BoolOp, depth: int) -> _Eval:
        values = [self.build(value, depth) for value in node.values]
        is_and = isinstance(node.op, ast.And)
        if len(values) == 2:
            first, second = values
            if is_and:
                return lambda env: first(env) and second(env)
            return lambda env: first(env) or second(env)

        def evaluate(env: _Env) -> Any:
            result = None
            for value in values:
                result = value(env)
                if bool(result) is not is_and:
                    return result
            return result

        return evaluate

    def compare(self, node: ast.Compare, depth: int) -> _Eval:
        left = self.build(node.left, depth)
        functions = [_COMPARE[type(op)] for op in node.ops]
        rights = [self.build(right, depth) for right in node.comparators]
        if len(functions) == 1:
            function, right = functions[0], rights[0]
            if right in self.constants:
                value = self.constants[right]
                return lambda env: function(left(env), value)
            return lambda env: function(left(env), right(env))
        pairs = list(zip(functions, rights, strict=True))

        def chain(env: _Env) -> Any:
            current, result = left(env), True
            for function, right in pairs:
                value = right(env)
                result = function(current, value)
                if not result:
                    return result
                current = value
            return result

        return chain

    def subscript(self, node: ast.Subscript, depth: int) -> _Eval:
        value, index = self.build(node.value, depth), self.build(node.slice, depth)
        if index not in self.constants:
            return lambda env: value(env)[index(env)]
        key = self.constants[index]
        if isinstance(node.value, ast.Name):  # the common event['x']
            slot = self.slots[node.value.id]
            return lambda env: env[slot][key]
        return lambda env: value(env)[key]

    def display(self, node: ast.List | ast.Tuple | ast.Set, depth: int) -> _Eval:
        items = [self.build(item, depth) for item in node.elts]
        if isinstance(node, ast.List):
            return lambda env: [item(env) for item in items]
        if isinstance(node, ast.Set):
            return lambda env: {item(env) for item in items}
        if all(item in self.constants for item in items):
            return self.constant(tuple(self.constants[item] for item in items))
        return lambda env: tuple([item(env) for item in items])

    def mapping(self, node: ast.Dict, depth: int) -> _Eval:
        entries = [
            (None if key is None else self.build(key, depth), self.build(value, depth))
            for key, value in zip(node.keys, node.values, strict=True)
        ]
        pairs = [(key, value) for key, value in entries if key is not None]
        if len(pairs) == len(entries):
            return lambda env: {key(env): value(env) for key, value in pairs}

        def merge(env: _Env) -> dict[Any, Any]:
            result: dict[Any, Any] = {}
            for key, value in entries:
                if key is not None:
                    result[key(env)] = value(env)
                    continue
                mapping = value(env)
                if not isinstance(mapping, Mapping):
                    message = f"'**' needs a mapping, not {type(mapping).__name__}"
                    raise TypeError(message)
                result.update(mapping)
            return result

        return merge

    def check_method(self, node: ast.Attribute, *, called: bool) -> None:
        # Point at the attribute name, which ends the node, not at the receiver that starts it.
        line, offset = node.end_lineno or node.lineno, node.end_col_offset or node.col_offset
        offset -= len(node.attr.encode())
        methods = f"the methods {', '.join(METHODS)}, called as in event.get('key')"
        if node.attr.startswith("_"):
            reason = f"attribute {node.attr!r} is not allowed (names starting with '_' never are)"
            self.fail_at(line, offset, reason, methods)
        if node.attr not in _RECEIVERS:
            self.fail_at(line, offset, f"attribute or method {node.attr!r} is not allowed", methods)
        if not called:
            self.fail_at(line, offset, f"the method {node.attr!r} must be called", methods)

    def call(self, node: ast.Call, depth: int) -> _Eval:
        function = node.func
        if isinstance(function, ast.Attribute):
            self.check_method(function, called=True)
        elif not isinstance(function, ast.Name):
            self.fail(function, "calling the result of an expression is not allowed", self.calls)
        elif function.id not in BUILTINS:
            self.fail(function, f"calling {function.id!r} is not allowed", self.calls)
        args = [self.build(arg, depth) for arg in node.args]
        keywords: list[tuple[str, _Eval]] = []
        for item in node.keywords:
            if item.arg is None:
                self.fail(item, "'**' unpacking of keyword arguments is not allowed")
            keywords.append((item.arg, self.build(item.value, depth)))
        if isinstance(function, ast.Attribute):
            return _method_call(function.attr, self.build(function.value, depth), args, keywords)
        return _function_call(BUILTINS[function.id], args, keywords)


def _positional(args: list[_Eval]) -> Callable[[_Env], tuple[Any, ...]]:
    # Unrolled for the usual counts: a comprehension is a function call of its own in 3.11.
    if not args:
        return lambda env: ()
    if len(args) == 1:
        (first,) = args
        return lambda env: (first(env),)
    if len(args) == 2:
        first, second = args
        return lambda env: (first(env), second(env))
    return lambda env: tuple([arg(env) for arg in args])


def _function_call(
    function: Callable[..., Any], args: list[_Eval], keywords: list[tuple[str, _Eval]]
) -> _Eval:
    positional = _positional(args)
    if keywords:
        return lambda env: function(
            *positional(env), **{key: value(env) for key, value in keywords}
        )
    if len(args) == 1:
        (only,) = args
        return lambda env: function(only(env))
    return lambda env: function(*positional(env))


def _method_call(
    name: str, receiver: _Eval, args: list[_Eval], keywords: list[tuple[str, _Eval]]
) -> _Eval:
    exact = _RECEIVERS[name]  # dict, str and bytes themselves skip the isinstance walk
    positional = _positional(args)
    if keywords:

        def evaluate_with_keywords(env: _Env) -> Any:
            target = receiver(env)
            method = exact.get(type(target)) or _method_of(name, exact, target)
            return method(target, *positional(env), **{key: value(env) for key, value in keywords})

        return evaluate_with_keywords

    def evaluate(env: _Env) -> Any:
        target = receiver(env)
        method = exact.get(type(target)) or _method_of(name, exact, target)
        return method(target, *positional(env))

    return evaluate


def _method_of(name: str, exact: dict[type, Callable[..., Any]], target: Any) -> Callable[..., Any]:
    for kind, method in exact.items():
        if isinstance(target, kind):
            return method
    wanted = "a mapping" if name in _MAPPING_METHODS else "a str or bytes"
    message = f"{name}() needs {wanted}, not {type(target).__name__}"
    raise TypeError(message)
