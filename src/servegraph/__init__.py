"""servegraph: real-time serving graphs, run in-process, over HTTP or on streams."""

from ._version import __version__ as __version__
from .context import Context as Context
from .errors import BackendError as BackendError
from .errors import GraphError as GraphError
from .errors import MissingDependencyError as MissingDependencyError
from .errors import NotReadyError as NotReadyError
from .errors import OverloadedError as OverloadedError
from .errors import ProtocolError as ProtocolError
from .errors import RoutingError as RoutingError
from .errors import ServegraphError as ServegraphError
from .errors import StepError as StepError
from .errors import StepTimeout as StepTimeout
from .event import Event as Event
from .event import Response as Response
from .graph.builder import Graph as Graph
from .graph.builder import StepRef as StepRef
from .graph.spec import EngineKind as EngineKind
from .graph.spec import GraphSpec as GraphSpec
from .graph.spec import StepKind as StepKind
from .graph.spec import StepSpec as StepSpec
from .graph.spec import Topology as Topology
from .models.ensemble import ParallelRun as ParallelRun
from .models.ensemble import VotingEnsemble as VotingEnsemble
from .models.router import ModelRouter as ModelRouter
from .models.server import ModelServer as ModelServer
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
    "ModelRouter",
    "ModelServer",
    "NotReadyError",
    "OverloadedError",
    "ParallelRun",
    "ProtocolError",
    "Response",
    "RoutingError",
    "ServegraphError",
    "StepError",
    "StepKind",
    "StepRef",
    "StepSpec",
    "StepTimeout",
    "Topology",
    "VotingEnsemble",
    "__version__",
]
