"""The ECR actions; importing this package registers every handler with the dispatcher."""

from ecr_emulator.actions import (
    account,
    auth,
    images,
    layers,
    lifecycle,
    policies,
    pull_through,
    pull_time,
    referrers,
    registry_policy,
    replication,
    repositories,
    resource_tags,
    scanning,
    signing,
    storage_class,
    tag_mutability,
    templates,
)

__all__ = ["account", "auth", "images", "layers", "lifecycle", "policies", "pull_through",
           "pull_time", "referrers", "registry_policy", "replication", "repositories",
           "resource_tags", "scanning", "signing", "storage_class", "tag_mutability",
           "templates"]
