"""User steps for the MLRun-compatibility cases in ``cases.json``.

Written from scratch (standard library only) to mirror the *behaviour* of the
step classes/functions used in MLRun's own serving tests
(tests/serving/demo_states.py, tests/serving/test_flow.py) and docs.

Conventions (same as MLRun):
* classes take ``context=None, name=None, **kwargs`` and expose ``do(body)``;
  MLRun injects ``name``/``context`` (and ``input_path``, ``result_path``,
  ``full_event``, ``graph_step``) when the constructor accepts ``**kwargs``.
* ``full_event`` handlers receive the event object and must return the event
  (the async/storey engine treats the return value as the next event).
  Exception: ``catch_error`` / ``catch_error_origin`` return a plain value;
  they are only used with the *sync* engine, where an error handler's return
  value becomes the response body.
"""

import copy


def _error_message(err):
    """Normalise ``event.error`` across engines.

    sync engine: dict ``{<step name or None>: "<message>"}``
    async engine: the exception object itself
    """
    if err is None:
        return None
    if isinstance(err, dict):
        values = list(err.values())
        return str(values[-1]) if values else ""
    return str(err)


# ---------------------------------------------------------------- classes


class Chain:
    """Append this step's name to a list body (returns a new list)."""

    def __init__(self, context=None, name=None, **kwargs):
        self.context = context
        self.name = name

    def do(self, body):
        body = copy.copy(body)
        body.append(self.name)
        return body


class Echo:
    """Return the body unchanged."""

    def __init__(self, context=None, name=None, **kwargs):
        self.context = context
        self.name = name

    def do(self, body):
        return body


class Multiply:
    """Multiply the body by ``factor`` (a class_args value)."""

    def __init__(self, context=None, name=None, factor=1, **kwargs):
        self.context = context
        self.name = name
        self.factor = factor

    def do(self, body):
        return body * self.factor


class Raiser:
    """Always raises ValueError("boom")."""

    def __init__(self, context=None, name=None, **kwargs):
        self.context = context
        self.name = name

    def do(self, body):
        raise ValueError("boom")


class EchoModel:
    """Simple router route: identifies itself by its route name."""

    def __init__(self, context=None, name=None, multiplier=1, **kwargs):
        self.context = context
        self.name = name
        self.multiplier = multiplier

    def do(self, body):
        return {
            "model": self.name,
            "outputs": [value * self.multiplier for value in body["inputs"]],
        }


# -------------------------------------------------------------- functions


def double(x):
    return x * 2


def inc(x):
    return x + 1


def return_type(body):
    """Name of the python type of the body the step received."""
    return type(body).__name__


def raise_error(body):
    raise ValueError("boom")


# ----------------------------------------------------- full_event handlers


def request_info(event):
    """full_event: expose request metadata in the body."""
    event.body = {
        "id": event.id,
        "method": event.method,
        "path": event.path,
        "body": event.body,
    }
    return event


def catch_error(event):
    """full_event error handler for the SYNC engine (returns a plain dict)."""
    return {
        "caught": True,
        "error": _error_message(event.error),
        "body": event.body,
    }


def catch_error_origin(event):
    """Like ``catch_error`` but also reports the failing step name."""
    return {
        "caught": True,
        "origin_state": getattr(event, "origin_state", None),
        "error": _error_message(event.error),
        "body": event.body,
    }


def catch_error_event(event):
    """full_event error handler for the ASYNC engine (returns the event)."""
    event.body = {
        "caught": True,
        "origin_state": getattr(event, "origin_state", None),
        "error": _error_message(event.error),
        "body": event.body,
    }
    return event
