"""ecr-gateway: an OCI Distribution registry whose storage is Amazon ECR.

The package is laid out by idea, each folder one layer of the request path:

- ``gateway.oci``: the protocol surface (routes, digests, names, ranges, OCI errors). It talks
  to storage only through the ``Registry`` protocol in ``gateway.oci.backend``, hands every
  call the request's explicit ``RequestContext`` (``gateway.oci.request``), and learns what
  storage can hold from the backend's ``Capabilities``; it knows nothing of ECR.
- ``gateway.backends``: the storage backends behind that protocol, one module per kind of
  upstream (ECR, ECR Public), and the router that picks one per route or mirror namespace.
- ``gateway.ecr``: what the ECR backends are built from (aiobotocore clients, the call
  policy, token cache, upload sessions cut into ECR parts, pull caches, the ECR → OCI error
  table, ECR Public's registry endpoint).
- ``gateway.pullthrough``: a wrapper backend that fills ECR from other registries.
- ``gateway.state``: where upload sessions live between requests (memory, redis).
- ``gateway.config``, ``gateway.cli``, ``gateway.app``: configuration, commands, wiring.

Outside the package: ``ecr_emulator`` (a stand-alone ECR that speaks the real AWS JSON
protocol; the embedded default upstream and the test double) and ``ecr_model`` (ECR's rules
shared by both, importing neither).
"""

__version__ = "0.1.0"
