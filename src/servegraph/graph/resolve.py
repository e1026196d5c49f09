"""Turn import paths ("pkg.mod:Name", "pkg.mod.Name", bare names) into objects. Never eval."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

Namespace = Mapping[str, Any] | ModuleType | list[ModuleType | Mapping[str, Any]] | None


class ResolveError(Exception):
    """A reference that cannot be turned into an object; the message says why."""


def resolve(reference: str, namespace: Namespace = None) -> Any:
    """Return the object that ``reference`` names.

    ``"pkg.mod:Name.attr"`` imports ``pkg.mod`` and walks the attributes after the colon.
    ``"pkg.mod.Name"`` imports the longest importable module prefix. A bare name (no dot, no
    colon) is looked up in ``namespace`` (a module, a mapping or a list of them).

    Raises:
        ResolveError: the module cannot be imported or has no such attribute.

    Example:
        >>> resolve("json:dumps")([1])
        '[1]'
    """
    if ":" in reference:
        module_name, _, attributes = reference.partition(":")
        return _walk(_import(module_name, reference), attributes, reference)
    if "." not in reference:
        return _lookup(reference, namespace)
    parts = reference.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise ResolveError(_import_failure(reference, module_name, exc)) from exc
            continue
        except Exception as exc:
            raise ResolveError(_import_failure(reference, module_name, exc)) from exc
        return _walk(module, ".".join(parts[cut:]), reference)
    if namespace is not None:
        return _lookup(reference, namespace)
    message = f"cannot import {reference!r}: no module named {parts[0]!r}"
    raise ResolveError(message)


def reference_of(obj: Any) -> str | None:
    """Return the ``"module:qualname"`` path of a module-level function or class, else None.

    Bound methods and other objects tied to an instance have none: the path would name the
    unbound function.
    """
    if inspect.ismethod(obj):
        return None
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def is_class(obj: Any) -> bool:
    """Say whether ``obj`` is a class (steps from classes are instantiated once)."""
    return inspect.isclass(obj)


def _import(module_name: str, reference: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise ResolveError(_import_failure(reference, module_name, exc)) from exc


def _walk(obj: Any, attributes: str, reference: str) -> Any:
    for attribute in attributes.split("."):
        try:
            obj = getattr(obj, attribute)
        except AttributeError:
            owner = getattr(obj, "__name__", repr(obj))
            message = f"cannot resolve {reference!r}: {owner!r} has no attribute {attribute!r}"
            raise ResolveError(message) from None
    return obj


def _lookup(name: str, namespace: Namespace) -> Any:
    spaces = namespace if isinstance(namespace, list) else [namespace]
    for space in spaces:
        if space is None:
            continue
        if isinstance(space, ModuleType):
            if hasattr(space, name):
                return getattr(space, name)
        elif name in space:
            return space[name]
    from ..steps import BUILTINS  # a dict of names: importing it loads no step

    builtin = BUILTINS.get(name)
    if builtin is not None:
        return resolve(builtin)
    known = ", ".join(sorted(BUILTINS))
    if namespace is None:
        message = (
            f"cannot resolve {name!r}: it is not a built-in step ({known}); other bare names "
            f"need a namespace, or use 'module:{name}'"
        )
    else:
        message = (
            f"cannot resolve {name!r}: not found in the given namespace, and not a built-in "
            f"step ({known})"
        )
    raise ResolveError(message)


def _import_failure(reference: str, module_name: str, exc: BaseException) -> str:
    why = f"{type(exc).__name__}: {exc}"
    return f"cannot import {reference!r}: importing {module_name!r} failed: {why}"
