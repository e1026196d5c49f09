"""ModelServer: the base class of models (load, predict, pre/post-processing, readiness).

A model is a step: put it under a router (``graph.add_route("iris", MyModel, ...)``) or in a
flow. Per event it reads the operation from the path (Open Inference Protocol v2:
``/v2/models/<name>[/versions/<v>]/<infer|explain|ready>``, or ``GET`` for its metadata; any
other path is an infer request, as MLRun's are), tells an OIP v2 tensor request from MLRun's
``{"inputs": [[...], ...]}`` by its content, and answers in the same protocol.

Its call is chosen once, at construction: synchronous when ``predict`` is, so a sync graph of
models never starts an event loop; asynchronous when ``predict`` is a coroutine function, when
adaptive batching is on (``batching={...}``), or when the model has its own thread pool
(``threads=N``, so that a slow sync predict never blocks the loop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..errors import NotReadyError, ProtocolError
from ..event import Event
from ..protocol import v2
from ..protocol.metadata import model_metadata
from .batching import Batcher, BatchSettings
from .loading import find_model_file, load_model_file
from .records import PredictionRecord

logger = logging.getLogger("servegraph.engine")

INFER, EXPLAIN, READY, METADATA = "infer", "explain", "ready", "metadata"
MODELS_PREFIX = "/v2/models/"
NEITHER = (
    "the body is neither an Open Inference Protocol v2 request "
    '({"inputs": [{"name": ..., "shape": [...], "datatype": ..., "data": [...]}]}) '
    'nor an MLRun one ({"inputs": [[...], ...]})'
)


class ModelServer:
    """Base class of models: override ``load`` and ``predict`` (sync or async).

    ``predict(request)`` gets a dict whose ``"inputs"`` are the rows to predict (a list, or a
    numpy array for a one-tensor OIP request; a dict of arrays by name for several tensors) and
    returns one output per row (a list or an array), or a dict of outputs by name. Without
    overriding anything, a model loaded from ``model_path`` (joblib, pickle or ONNX) predicts
    with its own ``predict`` (scikit-learn) or its first input (ONNX).

    Args:
        context: the step's Context (given by the engine).
        name: the model name (the route name, given by the engine; a route named
            ``"model:version"`` serves model ``model``, version ``version``).
        model_path: a model file, a directory holding one, or a ``file://`` URL.
        model: an already loaded model object (then nothing is loaded).
        version: the model version reported in answers and metadata.
        inputs: tensor metadata for ``GET /v2/models/<name>`` (``name``, ``datatype``,
            ``shape``).
        outputs: the same for the outputs.
        batching: adaptive batching settings (``max_batch_size``, ``max_latency_ms``,
            ``max_queue_size``, ``timeout_ms``, ``workers``), or None for none.
        threads: run a sync ``predict`` in a thread pool of this size.
        blocking: False declares a quick sync ``predict`` (a small scikit-learn model): a
            server calls it on the event loop, and batches run on the loop too, with no hop
            to a thread.
        **params: other class arguments, read with ``get_param``.

    Example:
        >>> class Doubler(ModelServer):
        ...     def predict(self, request):
        ...         return [[2 * x for x in row] for row in request["inputs"]]
        >>> model = Doubler(name="doubler")
        >>> model.post_init()
        >>> model.do_event(Event({"inputs": [[1, 2]]}, id="e1"))
        {'id': 'e1', 'model_name': 'doubler', 'outputs': [[2, 4]]}
    """

    platform: ClassVar[str] = "python"
    """What ``GET /v2/models/<name>`` reports as the model's platform."""

    def __init__(
        self,
        context: Any = None,
        name: str | None = None,
        *,
        model_path: str | None = None,
        model: Any = None,
        version: str | None = None,
        inputs: list[dict[str, Any]] | None = None,
        outputs: list[dict[str, Any]] | None = None,
        batching: Mapping[str, Any] | BatchSettings | None = None,
        threads: int | None = None,
        blocking: bool = True,
        **params: Any,
    ) -> None:
        self.context = context
        name = name or type(self).__name__
        if ":" in name and version is None:  # a route named "model:version"
            name, version = name.split(":", 1)
        self.name = name
        self.version = version
        self.model_path = model_path
        self.model = model
        self.inputs = inputs or []
        self.outputs = outputs or []
        self.params = params
        self.blocking = blocking
        self.ready = False
        self.error: str | None = None
        self.batching = BatchSettings(**batching) if isinstance(batching, Mapping) else batching
        self._batcher: Batcher | None = None
        self._executor = ThreadPoolExecutor(threads, f"model-{self.name}") if threads else None
        self._hooks = getattr(context, "hooks", None)
        if self.batching or self._executor or inspect.iscoroutinefunction(self.predict):
            self.do_event = self.ado_event  # type: ignore[method-assign]

    # -- what models override -------------------------------------------------------------

    def load(self) -> None:
        """Load the model; the default loads ``model_path`` unless ``model`` was given."""
        if self.model is None and self.model_path is not None:
            self.model = load_model_file(find_model_file(self.model_path))

    def predict(self, request: dict[str, Any]) -> Any:
        """Return one output per row of ``request["inputs"]``.

        The default calls a scikit-learn style ``model.predict(inputs)``, or runs an ONNX
        session on its first input.
        """
        model = self.model
        inputs = request["inputs"]
        if hasattr(model, "predict"):
            return model.predict(inputs)
        if hasattr(model, "get_inputs") and hasattr(model, "run"):
            import numpy

            feed = {model.get_inputs()[0].name: numpy.asarray(inputs, dtype=numpy.float32)}
            return model.run(None, feed)[0]
        message = f"model {self.name!r}: override predict() (the model object has none)"
        raise NotImplementedError(message)

    def explain(self, request: dict[str, Any]) -> Any:
        """Explain a prediction (override); the default says it is not implemented (501)."""
        message = f"model {self.name!r} does not implement explain()"
        raise NotImplementedError(message)

    def preprocess(self, request: dict[str, Any], operation: str) -> dict[str, Any]:
        """Change the request before ``predict`` (override); the default returns it."""
        return request

    def postprocess(self, response: dict[str, Any]) -> dict[str, Any]:
        """Change the answer after ``predict`` (override); the default returns it."""
        return response

    def validate(self, request: dict[str, Any], operation: str) -> None:
        """Check the request (override to add checks); it must hold ``"inputs"``."""
        if "inputs" not in request:
            message = f"model {self.name!r}: the request has no 'inputs'"
            raise ProtocolError(message)

    # -- lifecycle ------------------------------------------------------------------------

    def post_init(self, mode: str = "sync") -> None:
        """Load the model. A failure is kept as the reason the model is not ready: the
        graph still starts, the model answers 503, the other models keep serving."""
        try:
            self.load()
        except Exception as exc:
            self.error = f"loading failed: {type(exc).__name__}: {exc}"
            logger.exception("model %s: loading failed", self.name, extra={"step": self.name})
        else:
            self.ready = True

    def get_param(self, key: str, default: Any = None) -> Any:
        """A class argument, else a graph parameter, else ``default``."""
        if key in self.params:
            return self.params[key]
        if self.context is not None:
            return self.context.get_param(key, default)
        return default

    def metadata(self) -> dict[str, Any]:
        """The model's Open Inference Protocol metadata."""
        versions = [self.version] if self.version else []
        return model_metadata(self.name, versions, self.platform, self.inputs, self.outputs)

    async def aclose(self) -> None:
        """Stop the batcher (queued requests fail clearly) and the thread pool."""
        if self._batcher is not None:
            await self._batcher.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the step calls -------------------------------------------------------------------

    def do_event(self, event: Event) -> Any:
        """Answer one event (synchronous models)."""
        operation = operation_of(event)
        if operation is not INFER:
            return self._other(operation, event)
        request, tensors = self._request(event)
        hooks = self._hooks
        if hooks is None or hooks.record_prediction is None:  # monitoring off: nothing to time
            return self._respond(event, request, tensors, self.predict(request))
        started = time.perf_counter()
        try:
            outputs = self.predict(request)
        except Exception as exc:
            self._report(event, request, None, started, exc)
            raise
        self._report(event, request, outputs, started, None)
        return self._respond(event, request, tensors, outputs)

    async def ado_event(self, event: Event) -> Any:
        """Answer one event (async predict, batching or a thread pool)."""
        operation = operation_of(event)
        if operation is not INFER:
            return self._other(operation, event)
        request, tensors = self._request(event)
        started = time.perf_counter()
        try:
            outputs = await self._predict_async(request)
        except Exception as exc:
            self._report(event, request, None, started, exc)
            raise
        self._report(event, request, outputs, started, None)
        return self._respond(event, request, tensors, outputs)

    # -- internals ------------------------------------------------------------------------

    async def _predict_async(self, request: dict[str, Any]) -> Any:
        if self.batching is not None:
            inputs = request["inputs"]
            if isinstance(inputs, Mapping):
                message = f"model {self.name!r}: batching takes one input tensor, got {len(inputs)}"
                raise ProtocolError(message)
            if self._batcher is None:
                self._batcher = Batcher(
                    self._predict_rows, self.batching, name=self.name, inline=not self.blocking
                )
            return await self._batcher.submit(list(inputs))
        if inspect.iscoroutinefunction(self.predict):
            return await self.predict(request)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict, request)

    def _predict_rows(self, rows: list[Any]) -> Any:
        return self.predict({"inputs": rows})

    def _request(self, event: Event) -> tuple[dict[str, Any], v2.InferRequest | None]:
        if not self.ready:
            raise NotReadyError(self.name, self.error or "the model is still loading")
        body = event.body
        neither = f"model {self.name!r}: {NEITHER}"
        if not isinstance(body, dict) or "inputs" not in body:
            raise ProtocolError(neither)
        tensors: v2.InferRequest | None = None
        inputs = body["inputs"]
        first = inputs[0] if type(inputs) is list and inputs else None
        # OIP by content: its inputs are tensors (the cheap check; decoding validates fully).
        if type(first) is dict and "datatype" in first and "shape" in first:
            tensors = v2.decode_request(body)
            arrays = {item.name: tensor_of(item) for item in tensors.inputs}
            inputs = next(iter(arrays.values())) if len(arrays) == 1 else arrays
            request: dict[str, Any] = {"inputs": inputs, "id": tensors.id}
            if tensors.parameters:
                request["parameters"] = tensors.parameters
        elif type(inputs) is list:
            request = body
        else:
            raise ProtocolError(neither)
        request = self.preprocess(request, INFER)
        self.validate(request, INFER)
        return request, tensors

    def _respond(
        self,
        event: Event,
        request: dict[str, Any],
        tensors: v2.InferRequest | None,
        outputs: Any,
    ) -> Any:
        if tensors is None:
            answer: dict[str, Any] = {"id": event.id, "model_name": self.name}
            if self.version:
                answer["model_version"] = self.version
            answer["outputs"] = plain(outputs)
            return self.postprocess(answer)
        named = outputs if isinstance(outputs, Mapping) else {"output-0": outputs}
        encoded = [v2.encode_output(name, value) for name, value in named.items()]
        response = v2.InferResponse(
            model_name=self.name,
            model_version=self.version,
            id=tensors.id or event.id,
            outputs=v2.select_outputs(encoded, tensors.outputs),
        )
        return self.postprocess(v2.response_dict(response))

    def _other(self, operation: str, event: Event) -> Any:
        if operation is METADATA:
            return self.metadata()
        if not self.ready:
            raise NotReadyError(self.name, self.error or "the model is still loading")
        if operation is READY:
            return {"name": self.name, "ready": True}
        request = event.body if isinstance(event.body, dict) else {"inputs": event.body}
        request = self.preprocess(request, EXPLAIN)
        return self.postprocess(self.explain(request))

    def _report(
        self,
        event: Event,
        request: dict[str, Any],
        outputs: Any,
        started: float,
        error: BaseException | None,
    ) -> None:
        record = self._hooks.record_prediction if self._hooks is not None else None
        if record is None:
            return
        try:
            record(
                PredictionRecord(
                    model=self.name,
                    version=self.version,
                    event_id=event.id,
                    timestamp=datetime.now(UTC),
                    inputs=request.get("inputs"),
                    outputs=outputs,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )
            )
        except Exception:
            # Monitoring never fails a prediction: the hook's failure is logged, not raised.
            logger.exception("model %s: the prediction record hook failed", self.name)


def operation_of(event: Event) -> str:
    """The model operation an event asks for, from its path and method."""
    path = event.path
    if path.endswith("/infer") or not path.startswith(MODELS_PREFIX):
        return INFER
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last == EXPLAIN:
        return EXPLAIN
    if last == READY:
        return READY
    return METADATA if event.method == "GET" else INFER


def tensor_of(item: v2.RequestInput) -> Any:
    """A request tensor as a numpy array when numpy is installed, else nested lists."""
    try:
        return v2.input_array(item)
    except ImportError:  # pragma: no cover - numpy is installed with the models extra
        return v2.input_list(item)


def plain(outputs: Any) -> Any:
    """Outputs as plain Python values (numpy arrays and scalars converted)."""
    tolist = getattr(outputs, "tolist", None)
    return tolist() if callable(tolist) else outputs
