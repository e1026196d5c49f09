"""``V2ModelServer``: the base class MLRun model code imports, mapped onto servegraph.

This is the MLRun-shaped surface (constructor keywords, ``load`` / ``predict`` / ``preprocess``
/ ``postprocess``, ``get_param``, ``get_model``, readiness); the model-serving engine behind it
(Open Inference Protocol v2, batching, explain) arrives with servegraph's ModelServer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...event import Event


class V2ModelServer:
    """Base class of MLRun model classes: override ``load`` and ``predict``.

    Example:
        >>> class Doubler(V2ModelServer):
        ...     def predict(self, request):
        ...         return [x * 2 for x in request["inputs"]]
        >>> model = Doubler(name="doubler")
        >>> model.do_event(Event({"inputs": [1, 2]}, id="e1"))
        {'id': 'e1', 'model_name': 'doubler', 'outputs': [2, 4]}
    """

    def __init__(
        self,
        context: Any = None,
        name: str | None = None,
        model_path: str | None = None,
        model: Any = None,
        protocol: str | None = None,
        input_path: str | None = None,
        result_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.context = context
        self.name = name or type(self).__name__
        self.model_path = model_path
        self.model = model
        self.protocol = protocol or "v2"
        self.input_path = input_path
        self.result_path = result_path
        self.version = kwargs.pop("version", None)
        if ":" in self.name and self.version is None:  # MLRun's "model:version" route names
            self.name, self.version = self.name.split(":", 1)
        self._params = kwargs
        self.ready = model is not None

    def post_init(self, mode: str = "sync") -> None:
        """Load the model once the graph is built (MLRun calls this after construction)."""
        if not self.ready:
            self.load()
            self.ready = True

    def get_param(self, key: str, default: Any = None) -> Any:
        """A class argument, else a graph parameter, else ``default``."""
        if key in self._params:
            return self._params[key]
        if self.context is not None:
            return self.context.get_param(key, default)
        return default

    def get_model(self, suffix: str = "") -> tuple[str, None]:
        """Return the local model file (the one file of a model directory, or by ``suffix``)."""
        if self.model_path is None:
            message = f"model {self.name!r} has no model_path"
            raise ValueError(message)
        path = Path(self.model_path.removeprefix("file://"))
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffix))
            if len(files) != 1:
                message = f"model dir {path} holds {len(files)} files ending in {suffix!r}"
                raise ValueError(message)
            path = files[0]
        return str(path), None

    def load(self) -> None:
        """Load the model (override); the default does nothing."""

    def preprocess(self, request: dict[str, Any], operation: str) -> dict[str, Any]:
        """Change the request before ``predict`` (override); the default returns it."""
        return request

    def postprocess(self, response: dict[str, Any]) -> dict[str, Any]:
        """Change the response after ``predict`` (override); the default returns it."""
        return response

    def predict(self, request: dict[str, Any]) -> Any:
        """Return the outputs for ``request["inputs"]`` (override)."""
        message = f"{type(self).__name__}.predict() is not implemented"
        raise NotImplementedError(message)

    def do_event(self, event: Event) -> dict[str, Any]:
        """Answer an infer request in MLRun's shape (id, model_name, model_version?, outputs)."""
        request = event.body if isinstance(event.body, dict) else {"inputs": event.body}
        request = self.preprocess(request, "infer")
        response: dict[str, Any] = {"id": event.id, "model_name": self.name}
        if self.version:
            response["model_version"] = self.version
        response["outputs"] = self.predict(request)
        return self.postprocess(response)
