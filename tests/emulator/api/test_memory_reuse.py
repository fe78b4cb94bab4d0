"""Receiving layer parts reuses the memory the previous parts freed (ecr_emulator/memory.py).

Each part arrives as a stream of socket reads, each a new object of up to 1 MiB; with
malloc's adaptive defaults those blocks went back to the kernel when freed and every new one
faulted in fresh pages (about 130 minor faults per MiB received, each one taken by the host
too on a VM that hands freed pages back to it)."""

from __future__ import annotations

import os

from tests.emulator.api.helpers import push_layer
from tests.support.emulator import EmulatorProcess, ecr_client

MiB = 1024 * 1024
LAYER = 40 * MiB


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])


async def test_parts_are_received_into_memory_already_in_use(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName="memory/reuse")
        await push_layer(ecr, "memory/reuse", os.urandom(LAYER))  # the heap grows once
        before = _minor_faults(emulator.pid)
        await push_layer(ecr, "memory/reuse", os.urandom(LAYER))
        faults = _minor_faults(emulator.pid) - before
    # Fresh pages for every socket read would be about 5,000 faults for 40 MiB.
    assert faults < 1500, f"{faults} minor faults receiving {LAYER // MiB} MiB"
