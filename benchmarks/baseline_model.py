"""The HTTP benchmark's model baseline: Starlette on uvicorn, one predict call per request."""

from __future__ import annotations

from typing import Any

import numpy
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.http_targets import iris_model

MODEL = iris_model()


async def infer(request: Request) -> Response:
    """Parse an OIP v2 request, call the model once, answer an OIP v2 response."""
    body: Any = orjson.loads(await request.body())
    tensor = body["inputs"][0]
    rows = numpy.asarray(tensor["data"], dtype=numpy.float32).reshape(tensor["shape"])
    labels = MODEL.predict(rows)
    output = {"name": "output-0", "shape": [len(labels)], "datatype": "INT64"}
    answer = {"model_name": "iris", "outputs": [{**output, "data": labels.tolist()}]}
    return Response(orjson.dumps(answer), media_type="application/json")


model_app = Starlette(routes=[Route("/v2/models/iris/infer", infer, methods=["POST"])])
