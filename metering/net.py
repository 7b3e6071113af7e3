"""Local TCP ports: the one ``free_port`` of the stack, the demo, the benches and the tests."""

from __future__ import annotations

import socket


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else a port on 127.0.0.1 that the OS picks.

    The port is free when this returns; a caller races every other process for it, so it binds
    it at once (a child process started on it fails loudly if it lost the race)."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
