"""The ECR actions; importing this package registers every handler with the dispatcher."""

from gateway.emulator.actions import (
    auth,
    images,
    layers,
    lifecycle,
    policies,
    referrers,
    repositories,
    resource_tags,
)

__all__ = ["auth", "images", "layers", "lifecycle", "policies", "referrers", "repositories",
           "resource_tags"]
