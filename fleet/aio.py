"""Small asyncio helpers shared by every service."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel a background task owned by a component and wait until it has finished, so that
    nothing it holds outlives the component's ``close()``. ``None`` is a no-op."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
