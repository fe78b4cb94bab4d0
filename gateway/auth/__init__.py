"""Who may do what: users (htpasswd or AWS identities), the token server, access rules, TLS.

``install(app, config)`` wires it into the gateway when ``auth.mode`` is not ``none``: a
middleware that reads the credentials of every ``/v2`` request, the OCI dispatcher's access
check, the catalog filter and the ``/token`` endpoint.
"""

from __future__ import annotations

from gateway.auth.setup import install

__all__ = ["install"]
