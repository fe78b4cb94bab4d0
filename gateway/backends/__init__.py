"""Storage backends behind the OCI ``Registry`` protocol (gateway/oci/backend.py).

One module per kind of upstream: ``ecr`` (ECR's private registries) and ``ecr_public`` (ECR
Public, which shares ECR's push actions and pulls from its registry endpoint). ``router``
picks the backend that serves a request from the route or mirror namespace its name
resolves to. Wrappers compose around the same protocol (pull-through:
gateway/pullthrough/backend.py), so the OCI handlers never know which backend answered.
"""
