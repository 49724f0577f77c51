"""Helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def in_background(coro: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Run ``coro`` as a task for the body (a client reading everything), cancelled at the end."""
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, EOFError):
            await task
