"""``V2ModelServer``: the base class MLRun model code imports, on servegraph's ModelServer.

MLRun model classes subclass it unchanged: the constructor takes MLRun's keywords (``context,
name, model_path, model, protocol, input_path, result_path, **kwargs``), ``load`` / ``predict``
/ ``preprocess`` / ``postprocess`` / ``validate`` / ``explain`` keep their names, and
``get_model(suffix)`` returns ``(local_path, extra_dataitems)`` as MLRun's does. A route named
``model:version`` serves model ``model``, version ``version``.
"""

from __future__ import annotations

from typing import Any

from ...models.loading import find_model_file
from ...models.server import ModelServer


class V2ModelServer(ModelServer):
    """Base class of MLRun model classes, mapped onto servegraph's ModelServer.

    Example:
        >>> from servegraph import Event
        >>> class Doubler(V2ModelServer):
        ...     def predict(self, request):
        ...         return [x * 2 for x in request["inputs"]]
        >>> model = Doubler(name="doubler:v1")
        >>> model.post_init()
        >>> model.do_event(Event({"inputs": [1, 2]}, id="e1"))
        {'id': 'e1', 'model_name': 'doubler', 'model_version': 'v1', 'outputs': [2, 4]}
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
        version = kwargs.pop("version", None)
        super().__init__(
            context, name, model_path=model_path, model=model, version=version, **kwargs
        )
        self.protocol = protocol or "v2"
        self.input_path = input_path
        self.result_path = result_path

    def get_model(self, suffix: str = "") -> tuple[str, None]:
        """The local model file (the one file of a model directory, or the one ending in
        ``suffix``) and MLRun's extra data items (none here)."""
        if self.model_path is None:
            message = f"model {self.name!r} has no model_path"
            raise ValueError(message)
        return str(find_model_file(self.model_path, suffix)), None
