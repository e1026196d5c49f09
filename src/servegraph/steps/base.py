"""What every built-in step shares: it stands for a spec step built from its arguments.

``graph.to(Map("event * 2"))`` does not keep that object: the builder records the class and its
arguments (``as_step``) in the spec, so that the graph saves to a file and loads back, and the
engine builds a fresh instance, with the graph's context, wherever the graph runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class BuiltinStep:
    """Base of the built-in steps; subclasses record their arguments in ``arguments``."""

    arguments: dict[str, Any]
    default_name: str = "step"

    def as_step(self) -> tuple[type, Mapping[str, Any]]:
        """The class and class arguments a spec step needs to build this step again."""
        return type(self), self.arguments

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.arguments.items())
        return f"{type(self).__name__}({arguments})"
