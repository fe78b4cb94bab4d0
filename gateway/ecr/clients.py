"""aiobotocore ECR clients, one long-lived client per upstream (region, endpoint, identity).

aiobotocore is used directly rather than through aioboto3: aioboto3 15.5.0 pins
aiobotocore 2.25.1 (botocore 1.40.61), whose ECR model lacks ListImageReferrers; aioboto3's
client API is a thin wrapper over aiobotocore's ``create_client``, so nothing is lost.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


@dataclass(frozen=True)
class Upstream:
    """Where ECR API calls go, and as whom."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    service: str = "ecr"


class ClientFactory:
    def __init__(self, max_connections: int = 64, timeout: float = 60.0) -> None:
        self._stack = AsyncExitStack()
        self._session = get_session()
        self._clients: dict[Upstream, Any] = {}
        # Retries are ours (gateway.ecr.retry): botocore's own would multiply with them.
        self._config = AioConfig(
            retries={"total_max_attempts": 1},
            max_pool_connections=max_connections,
            connect_timeout=5,
            read_timeout=timeout,
            tcp_keepalive=True,
        )

    async def client(self, upstream: Upstream) -> Any:
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
            client = await self._stack.enter_async_context(context)
            self._clients[upstream] = client
        return client

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()
