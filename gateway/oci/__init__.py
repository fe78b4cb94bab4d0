"""The OCI Distribution API surface (spec 1.1): routes, request parsing, responses, errors.

Nothing here knows about ECR: handlers talk to storage through the ``Registry`` protocol
defined in :mod:`gateway.oci.backend`.
"""
