"""The OpenAPI description of a served graph, and a small page that shows it (no CDN needed)."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from .._version import __version__
from ..engine.plan import Plan
from ..graph.spec import GraphSpec, StepKind
from ..models.server import ModelServer

_ERROR = {
    "description": "An error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "step": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_ANY_JSON: dict[str, Any] = {"content": {"application/json": {"schema": {}}}}


def openapi_document(spec: GraphSpec, plan: Plan) -> dict[str, Any]:
    """OpenAPI 3.1 for the graph: its entry, the model routes of its models, the server routes."""
    steps = [step.name for step in spec.steps]
    routers = [step for step in spec.steps if step.kind is StepKind.ROUTER]
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _get("Liveness: the process serves requests")},
        "/v2/health/ready": {"get": _get("Readiness: every model has loaded (503 otherwise)")},
        "/v2": {"get": _get("Server metadata (Open Inference Protocol v2)")},
        "/v2/models": {"get": _get("The names of the served models")},
        "/metrics": {"get": _get("Prometheus metrics", "text/plain")},
        "/": _entry(steps, path_parameter=False),
        "/{path}": _entry(steps, path_parameter=True),
    }
    models = [m for m in plan.instances if isinstance(m, ModelServer)]
    versions = Counter(model.name for model in models)
    for model in models:
        base = f"/v2/models/{model.name}"
        if model.version is not None:
            if versions[model.name] == 1:  # a model asked for by name alone is its only version
                _add_model(paths, base, model.name)
            base = f"{base}/versions/{model.version}"
        _add_model(
            paths, base, f"{model.name} (version {model.version})" if model.version else model.name
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "servegraph",
            "version": __version__,
            "description": f"A serving graph with {len(steps)} steps and {len(routers)} routers.",
        },
        "paths": paths,
    }


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing the operations of ``document``."""
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code>"
                f"</td><td>{html.escape(operation.get('summary', ''))}</td></tr>"
            )
    title = html.escape(f"{document['info']['title']} {document['info']['version']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.3em 1em}</style></head>"
        f"<body><h1>{title}</h1><p>{html.escape(document['info']['description'])}</p>"
        "<p>The machine-readable description is at <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<table>{''.join(rows)}</table></body></html>"
    )


def _entry(steps: list[str], *, path_parameter: bool) -> dict[str, Any]:
    """The graph's entry: any of these methods sends an event (GET without a body)."""
    parameters = (
        [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}]
        if path_parameter
        else []
    )
    responses = {"200": {"description": "The graph's answer", **_ANY_JSON}, "default": _ERROR}
    summary = f"Send an event to the graph ({', '.join(steps)})"
    with_body = {
        "summary": summary,
        "parameters": parameters,
        "requestBody": {"required": False, **_ANY_JSON},
        "responses": responses,
    }
    without_body = {"summary": summary, "parameters": parameters, "responses": responses}
    return {
        "get": without_body,
        "post": with_body,
        "put": with_body,
        "patch": with_body,
        "delete": without_body,
    }


def _add_model(paths: dict[str, Any], base: str, title: str) -> None:
    paths[base] = {"get": _get(f"Metadata of model {title}")}
    paths[f"{base}/ready"] = {"get": _get(f"Readiness of model {title}")}
    paths[f"{base}/infer"] = {
        "post": {
            "summary": f"Infer with model {title} (OIP v2 tensors or MLRun rows)",
            "requestBody": {"required": True, **_ANY_JSON},
            "responses": {"200": {"description": "Outputs", **_ANY_JSON}, "default": _ERROR},
        }
    }


def _get(summary: str, content_type: str = "application/json") -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {content_type: {"schema": {}}}}},
    }
