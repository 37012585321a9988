"""Which TCP addresses a process listens on, read from /proc (Linux): the hardening drill's eyes.

A listening socket shows in ``/proc/net/tcp{,6}`` with state 0A and an inode; the process owns
it when one of its fds links to ``socket:[inode]``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"


def _decode(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = ipaddress.IPv4Address(raw[::-1])
        return str(address), int(port, 16)
    # IPv6 is stored as four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words)), int(port, 16)


def _listening(pid: int) -> dict[str, tuple[str, int]]:
    table: dict[str, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                table[fields[9]] = _decode(fields[1])
    return table


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_addresses(pid: int | None = None) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket process ``pid`` (default: this one) listens on."""
    pid = os.getpid() if pid is None else pid
    table = _listening(pid)
    return {table[inode] for inode in _socket_inodes(pid) if inode in table}


def supported() -> bool:
    return Path("/proc/self/net/tcp").exists()


def loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback
