"""Web pages in a browser on this host get nothing from an open emulator on loopback.

Without ``--credentials`` the emulator takes any access key, so every process of the machine
may use it; a web page is no such process, but can make itself one: it points a name of its
own at 127.0.0.1 (DNS rebinding), and the browser then lets it send that name requests it
signed in JavaScript with any key, and read the answers (control endpoints included, with
``--admin``). The ``Host`` header gives it away: it carries the page's name, where a real
client sends what it addressed, an IP address, ``localhost`` or a name its operator chose
(``--local-host-name``). Requests a browser marks as a page's (``Origin``,
``Sec-Fetch-Site``) are refused as well. With credentials a page has no secret to sign
with, and a listener reachable from elsewhere is open to the network anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ecr_emulator.control import Handler
from ecr_model.hosts import is_local_name, sent_by_web_page


def local_callers_only(names: Iterable[str] = ()) -> Middleware:
    """The middleware refusing foreign ``Host`` names and web pages' requests (403)."""
    listed = frozenset(name.lower().rstrip(".") for name in names)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_local_name(request.host, listed):
            return _denied("this emulator takes no credentials and answers on loopback only "
                           "to its addresses, localhost and --local-host-name names: a web "
                           "page can point any name at 127.0.0.1")
        if sent_by_web_page(request.headers):
            return _denied("this emulator takes no credentials and no requests from web "
                           "pages")
        return await handler(request)

    return guard


def _denied(message: str) -> web.Response:
    return web.json_response({"__type": "AccessDeniedException", "message": message},
                             status=403, content_type="application/x-amz-json-1.1")
