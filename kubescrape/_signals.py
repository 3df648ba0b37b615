"""SIGINT/SIGTERM as an asyncio event, for the long-running commands (run, emulate, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """Yield an event that SIGINT or SIGTERM sets while the block runs (as a DaemonSet rollout sends
    SIGTERM); the handlers are removed afterwards. Call from a running event loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
