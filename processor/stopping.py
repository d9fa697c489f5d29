"""Graceful stop on SIGTERM/SIGINT for the long-running commands (sink, alert delivery)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def run_until_signalled(
    run: Callable[[], Awaitable[T]], stop: Callable[[], None], announce: Callable[[], None]
) -> T:
    """Await `run()`; the first SIGTERM or SIGINT calls `announce()` and `stop()` (the service finishes what it is
    doing), a second one aborts at once (KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def first_signal() -> None:
        announce()
        stop()
        for sig in signals:
            loop.add_signal_handler(sig, abort)

    def abort() -> None:
        raise KeyboardInterrupt

    for sig in signals:
        loop.add_signal_handler(sig, first_signal)
    try:
        return await run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
