"""Browsers on this host: a loopback listener answers only requests that name it as this
host (DNS rebinding) and that no web page sent (cross-site writes).

A gateway on 127.0.0.1 where callers without credentials get something (``auth.mode: none``,
anonymous pulls) trusts every process of the machine. A web page in a browser there is no
such process, but it can make itself one: it points a name of its own at 127.0.0.1 (DNS
rebinding), and the browser then lets it send that name any request and read the answers,
the same origin throughout. What gives it away is the ``Host`` header, which carries the
page's name. So there, a request must name the gateway by an IP address, ``localhost`` (a
``.localhost`` name resolves to loopback in every browser, never through DNS), or a name the
operator listed (``auth.local_host_names``); anything else is ``403 DENIED``.

A page need not rebind to write, either: a cross-site "simple" POST (no preflight) to
``http://127.0.0.1:5000/v2/<name>/blobs/uploads/?digest=…`` stores a blob. Browsers mark
what a page sends with ``Origin`` (every POST, every cross-origin request) and
``Sec-Fetch-Site``; registry clients send neither, and the gateway serves no page of its own
that could. So a request carrying either is refused too. A trusted proxy's requests pass:
the proxy answers for its own server names and clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ecr_model.hosts import is_local_name, is_loopback, sent_by_web_page
from gateway.auth.exposure import anonymous_pulls
from gateway.auth.forwarded import ProxyTrust
from gateway.config import Config
from gateway.oci.errors import DENIED, OciError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rebinding_guard(config: Config, trust: ProxyTrust) -> Middleware | None:
    """The middleware refusing foreign ``Host`` names and web pages' requests, where one is
    needed: a loopback listener that serves callers without credentials."""
    if not is_loopback(config.listen_host):
        return None  # reached over the network: the exposure check and auth answer for it
    if config.auth.mode != "none" and not anonymous_pulls(config):
        return None  # a browser page has no credentials to send
    # The names the token realm may carry are names clients use for this gateway too.
    realm_names = [host.rsplit(":", 1)[0] if host.count(":") == 1 else host
                   for host in config.auth.token.realm_hosts]
    names = frozenset(name.lower().rstrip(".")
                      for name in [*config.auth.local_host_names, *realm_names])

    @web.middleware
    async def local_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trust.trusts(request.remote):
            return await handler(request)
        if not is_local_name(request.host, names):
            raise OciError(DENIED, {"reason": "host name not served here"},
                           message="this gateway answers on loopback to its addresses, "
                           "localhost and auth.local_host_names only: a web page can point "
                           "any name at 127.0.0.1")
        if sent_by_web_page(request.headers):
            raise OciError(DENIED, {"reason": "sent by a web page"},
                           message="this gateway takes no requests from web pages on "
                           "loopback without authentication")
        return await handler(request)

    return local_names_only

