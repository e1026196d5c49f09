"""Starting and closing step objects.

``astart()`` hooks run, first built first, before the first event (servers at startup,
consumers before they read, mock servers before their first event): that is where a step
connects to a table or a service, so that an unreachable one fails startup with a clear error.
Closing flushes emitters, then calls ``aclose()`` or ``close()`` hooks, last built first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from .emitters import Emitter

logger = logging.getLogger("servegraph.engine")


def has_start_hooks(instances: Iterable[object]) -> bool:
    """Whether any step object has an ``astart()`` hook."""
    return any(callable(getattr(instance, "astart", None)) for instance in instances)


async def start_steps(instances: Iterable[object]) -> None:
    """Await every step object's ``astart()`` hook, first built first; the first error stops
    the start (and is raised: the graph cannot serve)."""
    for instance in instances:
        hook = getattr(instance, "astart", None)
        if callable(hook):
            await hook()


def close_steps(instances: Iterable[object]) -> list[Awaitable[Any]]:
    """Flush emitters (first built first), then call every step object's close hook (last
    built first); return what is left to await, in order.

    Emitters flush before any step closes, so that what they held still reaches open steps.
    When a flush is async, everything after it waits for it (the returned awaitable does it
    all). A hook that raises is logged with its traceback and the others still run: closing is
    a process boundary.
    """
    instances = list(instances)
    for index, instance in enumerate(instances):
        if isinstance(instance, Emitter):
            try:
                flushing = instance.flush()
            except Exception:
                logger.exception("flushing step object %r failed", instance)
                continue
            if flushing is not None:
                return [_after(instance, flushing, instances[index + 1 :], instances)]
    return _close_hooks(instances)


async def _after(
    emitter: object, flushing: Awaitable[Any], rest: list[object], instances: list[object]
) -> None:
    """Await an async flush, flush the emitters after it in turn, then close every step."""
    await _logged(emitter, flushing)
    for instance in rest:
        if not isinstance(instance, Emitter):
            continue
        try:
            flushed = instance.flush()
        except Exception:
            logger.exception("flushing step object %r failed", instance)
            continue
        if flushed is not None:
            await _logged(instance, flushed)
    await await_all(_close_hooks(instances))


def _close_hooks(instances: list[object]) -> list[Awaitable[Any]]:
    pending: list[Awaitable[Any]] = []
    for instance in reversed(instances):
        hook = getattr(instance, "aclose", None) or getattr(instance, "close", None)
        if not callable(hook):
            continue
        try:
            result = hook()
        except Exception:
            logger.exception("closing step object %r failed", instance)
            continue
        if inspect.isawaitable(result):
            pending.append(_logged(instance, result))
    return pending


async def await_all(pending: Iterable[Awaitable[Any]]) -> None:
    """Await close hooks one after the other (they are already logged on failure)."""
    for closing in pending:
        await closing


async def _logged(instance: object, closing: Awaitable[Any]) -> None:
    try:
        await closing
    except Exception:
        logger.exception("closing step object %r failed", instance)


def shutdown_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop``, finish async generators and close it (as asyncio.run)."""
    if loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if asyncio._get_running_loop() is not None:
        # Collected while another loop runs in this thread (a finalizer): this one cannot
        # run now, so its cancelled tasks are dropped with it.
        loop.close()
        return
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
