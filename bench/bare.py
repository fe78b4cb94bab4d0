"""The bare ECR API baseline: a minimal aiobotocore script that uploads one file as a layer
straight to ECR (the emulator), in ECR's announced part size, one part after the other.

    python -m bench.bare --endpoint http://127.0.0.1:PORT --repository bench/bare FILE

Prints one JSON line: {"seconds": …, "bytes": …, "parts": …, "part_size": …}. It runs in its
own process, so it shares an interpreter with nothing, like any client would.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from pathlib import Path

from aiobotocore.session import get_session


async def upload(endpoint: str, repository: str, path: Path,
                 digest: str | None) -> dict[str, float]:
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
        digest = "sha256:" + hasher.hexdigest()
    session = get_session()
    # The key and secret come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as for any client.
    async with session.create_client(
            "ecr", region_name="us-east-1", endpoint_url=endpoint) as ecr:
        try:
            await ecr.create_repository(repositoryName=repository)
        except ecr.exceptions.RepositoryAlreadyExistsException:
            pass
        started = time.monotonic()
        answer = await ecr.initiate_layer_upload(repositoryName=repository)
        upload_id, part_size = answer["uploadId"], answer["partSize"]
        first = 0
        parts = 0
        with open(path, "rb") as handle:
            while part := handle.read(part_size):
                await ecr.upload_layer_part(
                    repositoryName=repository, uploadId=upload_id, partFirstByte=first,
                    partLastByte=first + len(part) - 1, layerPartBlob=part)
                first += len(part)
                parts += 1
        await ecr.complete_layer_upload(repositoryName=repository, uploadId=upload_id,
                                        layerDigests=[digest])
        seconds = time.monotonic() - started
    return {"seconds": seconds, "bytes": first, "parts": parts, "part_size": part_size}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--repository", default="bench/bare")
    parser.add_argument("--digest", help="the file's sha256 digest (computed if omitted)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(upload(args.endpoint, args.repository, args.file,
                                        args.digest))))


if __name__ == "__main__":
    main()
