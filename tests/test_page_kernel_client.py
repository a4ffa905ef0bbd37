"""The page kernels' client (``crm_analytics.page_kernel_client``): sliced waits that still honour the caller's timeout."""

from __future__ import annotations

import asyncio
from queue import Empty

import pytest
from jupyter_client.manager import AsyncKernelManager

from crm_analytics import serve
from crm_analytics.page_kernel_client import POLL_SLICE, PageKernelClient, SlicedPollChannel, next_slice


def test_a_slice_is_never_longer_than_the_time_left():
    assert next_slice(None, now=5.0) == POLL_SLICE
    assert next_slice(100.0, now=5.0) == POLL_SLICE
    assert next_slice(5.1, now=5.0) == pytest.approx(0.1)
    assert next_slice(4.0, now=5.0) == 0.0


def test_served_pages_use_the_sliced_client():
    argv = serve.voila_argv("root")
    assert f"--KernelManager.client_factory={PageKernelClient.__module__}.PageKernelClient" in argv


async def _exchange() -> tuple[dict, bool, type]:
    manager = AsyncKernelManager(kernel_name="python3", client_factory=PageKernelClient)
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute("6 * 7")
        reply = await client.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = await client.get_shell_msg(timeout=60)
        try:
            await client.get_shell_msg(timeout=3 * POLL_SLICE)  # nothing else is coming
            timed_out = False
        except Empty:
            timed_out = True
        return reply, timed_out, type(client.shell_channel)
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


def test_a_real_kernel_answers_through_the_sliced_channel_and_an_idle_wait_ends_at_its_timeout():
    reply, timed_out, channel = asyncio.run(_exchange())
    assert channel is SlicedPollChannel
    assert reply["content"]["status"] == "ok"
    assert timed_out
