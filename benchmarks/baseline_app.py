"""The HTTP benchmark's echo baseline: a minimal Starlette app on uvicorn (uvloop, httptools)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def echo(request: Request) -> Response:
    """Parse the JSON body and answer it."""
    body: Any = orjson.loads(await request.body())
    return Response(orjson.dumps(body), media_type="application/json")


echo_app = Starlette(routes=[Route("/", echo, methods=["POST"])])
