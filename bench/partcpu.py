"""CPU per GiB of the two per-byte stages of a push that are this project's own code, each
measured alone in this process (``python -m bench.partcpu``): far less noisy than a whole
push's CPU on a shared machine, where other work moves every figure by more than a change
of 0.1 CPU-s per GiB.

* the gateway's ``PartPipeline`` (gateway/ecr/part_pipeline.py) taking a body of 10 MiB
  parts in 1 MiB reads, as a socket delivers them, into parts whose bodies are hashed (base64
  and sha256, SigV4's payload hash) in worker threads, with ECR and the staging writes
  standing in (no network, no disk): the event loop's and the thread hops' share, for each
  number of steps a filling part is handed over in;
* the emulator's streamed ``UploadLayerPart`` body (ecr_emulator/jsonbody.py) decoded from
  1 MiB chunks that do not start on a base64 quantum (a body's chunks rarely do), against
  pybase64 alone decoding the same text.

CPU is the process's (every thread's) user + system time; each figure is the lowest of
``--rounds`` alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pybase64

from ecr_emulator import jsonbody
from gateway.ecr import part_pipeline
from gateway.ecr.partbody import EncodedPart
from gateway.state.sessions import UploadSession

MiB = 1024 * 1024
GiB = 1024 * MiB
PART = 10 * MiB
READ = MiB


class _Upstream:
    """ECR and the staging spool, standing in: the part's body is taken as hashed ahead,
    and a staging write is a thread hop that writes nothing."""

    def admit(self, size: int) -> None:
        pass

    async def send(self, part: EncodedPart) -> None:
        await part.body_for(part.members)

    async def record_progress(self, committed: int) -> None:
        pass

    async def spool(self, offset: int, data: list[memoryview]) -> None:
        await asyncio.to_thread(len, data)

    async def save(self, tail: bytes) -> None:
        pass

    def sent_from_start(self, position: int) -> None:
        pass


async def _reads(pool: bytes, total: int) -> AsyncIterator[bytes]:
    for start in range(0, total, READ):
        offset = start % len(pool)
        yield pool[offset:offset + READ]
        await asyncio.sleep(0)


async def _pipeline(pool: bytes, total: int) -> None:
    session = UploadSession(id="bench", name="bench", repository="bench", registry_id=None,
                            route="", ecr_upload_id="bench", part_size=PART)
    pipeline = part_pipeline.PartPipeline(
        session, part_pipeline.Pending(), {"repositoryName": "bench", "uploadId": "bench"},
        _Upstream(), asyncio.Semaphore(8), True)
    await pipeline.run(_reads(pool, total))


def _cpu_per_gib(work: Callable[[], Any], size: int) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / (size / GiB)


class _Discard:
    size = 0

    def write(self, piece: bytes) -> None:
        self.size += len(piece)

    async def drain(self) -> None:
        pass

    def __len__(self) -> int:
        return self.size


async def _decode(chunks: list[bytes], repeat: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def sink(head: dict[str, Any]) -> _Discard:
        return _Discard()

    for _ in range(repeat):
        await jsonbody.parse(body(), "layerPartBlob", sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=0.5, help="bytes per round (GiB)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", default="2,5", help="steps per 10 MiB part to compare")
    args = parser.parse_args()
    total = int(args.gib * GiB) // PART * PART
    pool = os.urandom(64 * MiB)
    steps = [int(value) for value in args.steps.split(",")]
    pipeline: dict[int, list[float]] = {}
    for round_ in range(args.rounds):
        for count in steps if round_ % 2 == 0 else reversed(steps):
            part_pipeline.STEPS_PER_PART = count
            pipeline.setdefault(count, []).append(
                _cpu_per_gib(lambda: asyncio.run(_pipeline(pool, total)), total))
    for count, figures in pipeline.items():
        print(f"gateway PartPipeline, {count} steps per 10 MiB part: "
              f"{min(figures):.3f} CPU-s per GiB")

    text = pybase64.b64encode(pool[:PART])
    document = (b'{"repositoryName":"bench","uploadId":"bench","partFirstByte":0,'
                b'"partLastByte":10485759,"layerPartBlob":"' + text + b'"}')
    # The first read ends 7 bytes past a MiB: every chunk after it starts mid-quantum.
    chunks = [document[:READ + 7]] + [document[start:start + READ]
                                      for start in range(READ + 7, len(document), READ)]
    repeat = max(1, total // PART)
    views = [memoryview(text)[start:start + READ] for start in range(0, len(text), READ)]

    def decode_body() -> None:
        asyncio.run(_decode(chunks, repeat))

    def decode_alone() -> None:  # nothing kept: no fresh pages for the results
        for _ in range(repeat):
            for view in views:
                pybase64.b64decode(view, validate=True)

    decoded = [_cpu_per_gib(decode_body, repeat * PART) for _ in range(args.rounds)]
    alone = [_cpu_per_gib(decode_alone, repeat * PART) for _ in range(args.rounds)]
    print(f"emulator UploadLayerPart body decoded: {min(decoded):.3f} CPU-s per GiB of layer "
          f"(pybase64 alone: {min(alone):.3f})")


if __name__ == "__main__":
    main()
