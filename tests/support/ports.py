"""Ports on 127.0.0.1: one for a server the test is about to start, one that refuses.

A port found free and closed again is free for anyone: on a parallel run another test's server
may bind it next (bind(0) hands out ports again). For a server the test starts itself that only
costs a loud bind error; for an upstream that must stay unreachable it is a silent wrong answer
(the daemon reaches some other test's simulator and pays for a call), so such a port is held.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A port nothing is bound to now, for a server this test starts next."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses every connection while the block runs: bound but never listening
    (the kernel answers a connect with a reset), and taken, so no other server can bind it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])
