"""An upload ECR ended while the gateway still holds it, begun again from the staged copy.

ECR ends a layer upload that received no part for a while (the embedded emulator: twice
``uploads.idle_timeout_seconds``, ecr_emulator/upload_expiry.py); UploadLayerPart and
CompleteLayerUpload naming it then answer UploadNotFoundException. Bytes under ECR's 5 MiB
part minimum stay in the gateway as the session's tail, so a client that sends a little at a
time, each chunk acknowledged (202 and its Range), keeps its session alive while ECR receives
no part and ends the upload. ECR has no call that keeps an upload alive without a part, and
refuses a part under the minimum but for the last: the gateway cannot prevent that end.

What it can do: where its staging spool holds every byte from the first (it does for an
upload this process received whole, unless the spool was dropped: ``spools_max_bytes``
reached, a failed write, bytes that went through another replica, a restart after
``spool_max_age``), the upload manager starts a new ECR upload, sends those bytes again as
parts read from the spool one at a time, records the new upload id, and goes on; the client
notices nothing. Elsewhere the client gets ``404 BLOB_UPLOAD_UNKNOWN``, as before, and starts
the upload again.

The bytes sent again count against the sender's unfinished-bytes bound as any part does
(gateway/ecr/unfinished.py; the ended upload's count as an expired upload's), and an upload is
begun again at most :data:`MAX_RESUMES` times: a client cannot have the gateway send the same
gigabytes to ECR again and again for nothing.
"""

from __future__ import annotations

from itertools import pairwise

from gateway.ecr.part_pipeline import MIN_PART

# Times one upload is begun again in ECR; after that, ECR's end of it is the client's too.
MAX_RESUMES = 3


def resend_ranges(end: int, part_size: int) -> list[tuple[int, int]]:
    """The first ``end`` bytes as ECR parts ``[start, stop)`` of at most ``part_size``
    bytes, none but a lone one under ECR's minimum: a short remainder shares the part before
    it (split in two if both halves reach the minimum, else joined: then under twice the
    minimum, within ECR's largest part)."""
    stops = [*range(part_size, end, part_size), end]
    if len(stops) > 1 and end - stops[-2] < MIN_PART:
        joined_from = stops[-3] if len(stops) > 2 else 0
        half = (end - joined_from) // 2
        stops[-2:] = [joined_from + half, end] if half >= MIN_PART else [end]
    return [(start, stop) for start, stop in pairwise([0, *stops]) if stop > start]
