"""Per-request time limits with one timer for all requests.

``asyncio.timeout`` arms and disarms a loop timer per request (~2 µs, a fifth of the app's own
time per request); a server with a limit of seconds needs no such precision. ``Deadlines``
keeps each request's deadline in a dict and one watchdog task, ticking a few times a second,
cancels the requests past theirs; the request then answers 504.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

TICK_S = 0.05


class Deadlines:
    """The deadlines of the requests in flight, and the watchdog that enforces them."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(TICK_S, timeout_s / 4)
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the watchdog on the running loop (once)."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        """Stop the watchdog."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    def enter(self, task: asyncio.Task[Any]) -> None:
        """Give ``task`` its deadline, from now."""
        self._deadlines[task] = task.get_loop().time() + self.timeout_s

    def is_expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for passing its deadline."""
        return task in self._expired

    def leave(self, task: asyncio.Task[Any]) -> None:
        """Forget ``task``."""
        self._deadlines.pop(task, None)
        self._expired.discard(task)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            late = [task for task, deadline in self._deadlines.items() if deadline <= now]
            for task in late:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
