"""A signature covers the body as sent; the emulator sees bodies only decoded, so a body
with a Content-Encoding is refused (ECR's API has no request compression), whoever signed
it and over whichever bytes."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.emulator import REGION, EmulatorProcess

TARGET = "AmazonEC2ContainerRegistry_V20150921.CreateRepository"


def _post(emulator: EmulatorProcess, signed_body: bytes, sent_body: bytes) -> tuple[int, str]:
    request = AWSRequest(method="POST", url=emulator.url + "/", data=signed_body, headers={
        "X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1",
        "Content-Encoding": "gzip"})
    SigV4Auth(Credentials(emulator.access_key_id, emulator.secret_access_key), "ecr",
              REGION).add_auth(request)
    headers = dict(request.headers.items())
    sent = urllib.request.Request(emulator.url + "/", data=sent_body, headers=headers,
                                  method="POST")
    try:
        with urllib.request.urlopen(sent, timeout=10) as answer:
            return answer.status, json.loads(answer.read()).get("__type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["__type"]


def test_a_compressed_body_is_refused(emulator: EmulatorProcess) -> None:
    body = json.dumps({"repositoryName": "team/zipped"}).encode()
    packed = gzip.compress(body)
    # Signed over the bytes decompressed (accepted before: not how AWS checks a signature)
    # and over the bytes sent (what AWS would verify, and could not be checked here).
    assert _post(emulator, body, packed) == (400, "SerializationException")
    assert _post(emulator, packed, packed) == (400, "SerializationException")
    assert not [entry for entry in emulator.requests() if entry["outcome"] == "ok"]
