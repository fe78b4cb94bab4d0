"""Configuration: typed sections with defaults (models), loaded from YAML and the
environment (loading), refused with the key's path, the reason and its source (errors);
schema publishes the JSON Schema editors and the Helm chart check against."""

from __future__ import annotations

from gateway.config.errors import ConfigError
from gateway.config.loading import ENV_PREFIX, FILE_OPTION, load_config
from gateway.config.models import (
    AccessRuleConfig,
    AuthConfig,
    BlobCacheConfig,
    BlobsConfig,
    CacheConfig,
    Config,
    LimitsConfig,
    MirrorConfig,
    PullThroughConfig,
    RateLimitConfig,
    RepositorySettings,
    RouteConfig,
    StagingConfig,
    StateConfig,
    TlsConfig,
    TokenConfig,
    UploadsConfig,
    UpstreamConfig,
)

__all__ = [
    "ENV_PREFIX", "FILE_OPTION", "AccessRuleConfig", "AuthConfig", "BlobCacheConfig",
    "BlobsConfig", "CacheConfig", "Config", "ConfigError", "LimitsConfig", "MirrorConfig",
    "PullThroughConfig", "RateLimitConfig", "RepositorySettings", "RouteConfig",
    "StagingConfig", "StateConfig", "TlsConfig", "TokenConfig", "UploadsConfig",
    "UpstreamConfig", "load_config",
]
