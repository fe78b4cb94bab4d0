"""What one request tells the storage backend beyond an operation's own arguments.

The dispatcher builds a :class:`RequestContext` once per request and hands it to every
backend call, so nothing about the request travels implicitly (no context variables): a
backend that maps names onto storage, signs calls as the caller or counts its upstream calls
reads it here, and anything cached per caller is keyed by values taken from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Request keys: set by the auth middleware (the caller's own storage credentials) and by the
# call-counting middleware (the list the backend appends each upstream call to).
CALLER = "caller_credentials"
UPSTREAM_ACTIONS = "upstream_actions"
PULLTHROUGH_EVENTS = "pullthrough_events"  # the list pull-through events are appended to


@dataclass(frozen=True)
class Credentials:
    """A caller's own keys for the storage behind the gateway (never printed)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RequestContext:
    # The repository name as the client wrote it ("" for the catalog).
    name: str = ""
    # The upstream registry a mirror client asked for: containerd adds ``?ns=<host>`` to
    # every request it sends to a mirror (None without it).
    ns: str | None = None
    # Whose identity storage calls are made as (None: the gateway's own).
    caller: Credentials | None = None
    # The spec endpoint id being served (end-2, end-3, ...), None outside the OCI API.
    endpoint: str | None = None
    # Upstream calls made for this request, for its access-log line (None: not counted).
    calls: list[str] | None = field(default=None, compare=False, repr=False)
    # Pull-through events of this request, for its access-log line (None: not recorded).
    events: list[str] | None = field(default=None, compare=False, repr=False)
    # Whom the request counts against (``user:<name>`` or ``addr:<address>``, never a
    # secret): the upload sessions it opens are this client's. None: the gateway's own work.
    client: str | None = None

    def for_name(self, name: str) -> RequestContext:
        """The same request about another repository (a mount's source, say)."""
        return replace(self, name=name)

    def detached(self) -> RequestContext:
        """The same request for work that outlives it (a background copy): what that work
        does later is not counted in the request's access-log line, and the upload sessions
        it opens are the gateway's, not the client's."""
        return replace(self, calls=None, events=None, client=None)
