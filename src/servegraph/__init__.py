"""servegraph: real-time serving graphs, run in-process, over HTTP or on streams."""

from ._version import __version__ as __version__
from .context import Context as Context
from .errors import BackendError as BackendError
from .errors import GraphError as GraphError
from .errors import MissingDependencyError as MissingDependencyError
from .errors import ProtocolError as ProtocolError
from .errors import RoutingError as RoutingError
from .errors import ServegraphError as ServegraphError
from .errors import StepError as StepError
from .errors import StepTimeout as StepTimeout
from .event import Event as Event
from .graph.builder import Graph as Graph
from .graph.builder import StepRef as StepRef
from .graph.spec import EngineKind as EngineKind
from .graph.spec import GraphSpec as GraphSpec
from .graph.spec import StepKind as StepKind
from .graph.spec import StepSpec as StepSpec
from .graph.spec import Topology as Topology
from .testing import MockServer as MockServer

__all__ = [
    "BackendError",
    "Context",
    "EngineKind",
    "Event",
    "Graph",
    "GraphError",
    "GraphSpec",
    "MissingDependencyError",
    "MockServer",
    "ProtocolError",
    "RoutingError",
    "ServegraphError",
    "StepError",
    "StepKind",
    "StepRef",
    "StepSpec",
    "StepTimeout",
    "Topology",
    "__version__",
]
