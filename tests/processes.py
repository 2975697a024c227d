"""Reading a child process's output without ever waiting forever."""

from __future__ import annotations

import queue
import threading
from typing import IO

# Long enough for a loaded 2-core machine to start Django; a hang still fails in bounded time.
LINE_TIMEOUT = 60.0


def read_line(stream: IO[str], timeout: float = LINE_TIMEOUT) -> str:
    """The next line of ``stream``, or AssertionError after ``timeout`` seconds.

    ``readline()`` on a pipe has no timeout of its own, so a daemon thread reads and hands
    the line over through a queue that we wait on with one.
    """
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line within {timeout:.0f} s") from None
