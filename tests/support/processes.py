"""What the kernel tells of a process the tests started."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path


def peak_rss(pid: int) -> int:
    """A process's peak resident set size in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024


def open_fds(pid: int) -> int:
    """How many file descriptors a process holds (files, sockets, pipes)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_connections(pid: int, *, remote_ports: Iterable[int]) -> int:
    """A process's established IPv4 TCP connections to any of ``remote_ports`` (its own
    sockets, by inode: not the far ends' sockets on the same host)."""
    ports, inodes = set(remote_ports), _socket_inodes(pid)
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        established = fields[3] == "01"
        if established and fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) in ports:
            count += 1
    return count


def deleted_files(pid: int) -> int:
    """How many files a process holds open that have no name any more (spools, files
    evicted while open)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").endswith(" (deleted)")
        except OSError:
            continue
    return count
