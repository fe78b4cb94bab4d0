"""ecr-gateway: an OCI Distribution registry whose storage is Amazon ECR.

The package is laid out by idea, each folder one layer of the request path:

- ``gateway.oci``: the protocol surface (routes, digests, names, ranges, OCI errors). It talks
  to storage only through the ``Registry`` protocol in ``gateway.oci.backend`` and knows
  nothing of ECR.
- ``gateway.ecr``: the translation of each OCI operation into ECR API actions (aiobotocore
  clients, token cache, upload sessions cut into ECR parts, the ECR → OCI error table).
- ``gateway.state``: where upload sessions live between requests (memory, redis).
- ``ecr_emulator``: a stand-alone ECR that speaks the real AWS JSON protocol; the
  embedded default upstream and the test double.
- ``gateway.config``, ``gateway.cli``, ``gateway.app``: configuration, commands, wiring.
"""

__version__ = "0.1.0"
