"""The OCI Distribution API surface (spec 1.1): routes, request parsing, responses, errors.

Nothing here knows which storage sits behind it: handlers talk to storage through the
``Registry`` protocol defined in :mod:`gateway.oci.backend`, pass each call the request's
:class:`~gateway.oci.request.RequestContext`, and refuse what the backend's ``Capabilities``
rule out.
"""
