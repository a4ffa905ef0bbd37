"""Work started in a background thread, for computations in compiled code that releases the GIL.

``start(function, ...)`` returns at once with a ``Future``; the caller computes something else meanwhile
and picks the result up with ``result()``, which waits for it or raises what the function raised.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def start(function: Callable[..., Any], /, *args: Any, name: str = "background", **kwargs: Any) -> Future:
    """Call ``function(*args, **kwargs)`` in a new thread named after ``name``; return its ``Future``.

    The thread ends when the call returns; nothing waits for it unless the caller asks for the result.
    """
    executor = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return executor.submit(function, *args, **kwargs)
    finally:
        executor.shutdown(wait=False)  # the thread ends with the call
