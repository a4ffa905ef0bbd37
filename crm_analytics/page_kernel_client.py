"""A kernel client whose message waits cannot miss a message that has already arrived.

Voilà executes a page with nbclient, which waits for a cell's ``execute_reply`` with one long
``shell_channel.get_msg(timeout=<cell timeout>)``: a single ``zmq.asyncio`` poll. Now and then that poll does
not wake when the reply arrives, and the wait lasts the whole cell timeout although the kernel answered at
once. Measured on the executive page (a cell that draws images into an ``Output`` widget): the kernel went
idle after 2.2 s, yet the cell took the full timeout in about half of the visits (120 s by default, 15 s with
``--execution-timeout 15``), and the browser waited for the page that long. nbclient issue #312 reports
the same hang with widgets.

``SlicedPollChannel`` waits in slices of at most ``POLL_SLICE`` seconds, each a fresh poll, until the
caller's timeout has passed: a missed wake-up costs at most one slice. ``PageKernelClient`` uses it on every
channel; ``crm_analytics.serve`` makes it the client of page kernels (``KernelManager.client_factory``).
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

POLL_SLICE = 0.25  # seconds


def next_slice(deadline: float | None, now: float) -> float:
    """Seconds to poll next: ``POLL_SLICE``, or less when ``deadline`` (monotonic seconds; None: none) is closer."""
    if deadline is None:
        return POLL_SLICE
    return max(0.0, min(POLL_SLICE, deadline - now))


class SlicedPollChannel(AsyncZMQSocketChannel):
    """``AsyncZMQSocketChannel`` whose ``get_msg`` polls in short slices until its timeout."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        """Return the next message; raise ``queue.Empty`` when none arrived within ``timeout`` seconds (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return await super().get_msg(timeout=next_slice(deadline, time.monotonic()))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PageKernelClient(AsyncKernelClient):
    """The asynchronous kernel client with ``SlicedPollChannel`` for shell, IOPub, stdin and control."""

    shell_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    stdin_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    control_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
