"""Run MLRun serving graphs, step classes and model classes with servegraph.

Entry points (the names MLRun users are told to use)::

    from servegraph.compat import mlrun as sgm
    graph = sgm.load(function.spec.graph.to_dict(), namespace=my_module)
    server = graph.mock_server()
    server.test("/v2/models/m1/infer", body={"inputs": [[1, 2]]})

and ``from servegraph.compat.mlrun import V2ModelServer`` in model code, in place of
``from mlrun.serving import V2ModelServer``. Every MLRun-ism (``error_step``, ``before``,
lambda strings, MLRun's answer and error shapes) lives in this package and nowhere else.
"""

from .errors import GraphError as GraphError
from .errors import MLRunInvalidArgumentError as MLRunInvalidArgumentError
from .errors import MLRunRuntimeError as MLRunRuntimeError
from .loader import MLRunGraph as MLRunGraph
from .loader import load as load
from .mock import MLRunMockServer as MLRunMockServer
from .mock import MockResponse as MockResponse
from .model import V2ModelServer as V2ModelServer
from .steps import ErrorHandler as ErrorHandler
from .steps import Lambda as Lambda
from .steps import MLRunEvent as MLRunEvent
from .steps import ModelRouter as ModelRouter

__all__ = [
    "ErrorHandler",
    "GraphError",
    "Lambda",
    "MLRunEvent",
    "MLRunGraph",
    "MLRunInvalidArgumentError",
    "MLRunMockServer",
    "MLRunRuntimeError",
    "MockResponse",
    "ModelRouter",
    "V2ModelServer",
    "load",
]
