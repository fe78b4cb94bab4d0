"""aiobotocore ECR clients, one long-lived client per upstream (region, endpoint, identity).

aiobotocore is used directly rather than through aioboto3: aioboto3 15.5.0 pins
aiobotocore 2.25.1 (botocore 1.40.61), whose ECR model lacks ListImageReferrers; aioboto3's
client API is a thin wrapper over aiobotocore's ``create_client``, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import CredentialRetrievalError

from gateway.ecr import partbody
from gateway.oci import errors as oci
from gateway.oci.errors import OciError
from gateway.oci.request import Credentials

log = logging.getLogger(__name__)

__all__ = ["ClientFactory", "Credentials", "Upstream"]


@dataclass(frozen=True)
class Upstream:
    """Where ECR API calls go, and as whom."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    service: str = "ecr"


class ClientFactory:
    def __init__(self, max_connections: int = 64, timeout: float = 60.0,
                 connect_timeout: float = 5.0) -> None:
        self._session = get_session()
        self._clients: dict[Upstream, Any] = {}
        self._contexts: dict[Upstream, Any] = {}
        self._creating = asyncio.Lock()  # concurrent first calls share one client
        # Retries are ours (gateway.ecr.retry): botocore's own would multiply with them.
        self._config = AioConfig(
            retries={"total_max_attempts": 1},
            max_pool_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            tcp_keepalive=True,
        )

    async def client(self, upstream: Upstream) -> Any:
        client = self._clients.get(upstream)
        if client is not None:
            return client
        async with self._creating:
            client = self._clients.get(upstream)
            if client is None:
                context = self._session.create_client(
                    upstream.service,
                    region_name=upstream.region,
                    endpoint_url=upstream.endpoint_url,
                    aws_access_key_id=upstream.access_key_id,
                    aws_secret_access_key=upstream.secret_access_key,
                    aws_session_token=upstream.session_token,
                    config=self._config,
                )
                try:
                    client = await context.__aenter__()
                except CredentialRetrievalError as exc:
                    # a setup mistake of this gateway: the operator reads why in the log
                    log.warning("cannot get AWS credentials: %s", exc)
                    raise OciError(oci.UNAVAILABLE, {},
                                   message="the gateway could not get AWS credentials"
                                           " (its log says why)",
                                   headers={"Retry-After": "1"}) from exc
                partbody.install(client)  # UploadLayerPart bodies without stdlib json
                self._contexts[upstream] = context
                self._clients[upstream] = client
        return client

    def __len__(self) -> int:
        """How many clients are open."""
        return len(self._clients)

    async def discard(self, which: Callable[[Upstream], bool]) -> int:
        """Close the clients of the upstreams ``which`` selects (an identity that expired)."""
        chosen = [upstream for upstream in self._clients if which(upstream)]
        for upstream in chosen:
            self._clients.pop(upstream, None)
            await self._contexts.pop(upstream).__aexit__(None, None, None)
        return len(chosen)

    async def close(self) -> None:
        await self.discard(lambda _: True)
