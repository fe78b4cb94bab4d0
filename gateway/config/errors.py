"""The one error a configuration mistake raises: the key's dotted path, the reason, and
where the value came from (``FILE:LINE:COLUMN``, an ``ECR_GATEWAY_*`` variable, a flag)."""

from __future__ import annotations

import re

KeyPath = tuple[str, ...]


class ConfigError(ValueError):
    """``key`` is a dotted path (``routes[0].repository.lifecycle_policy``), or its parts
    (``("mirrors", "docker.io", "registry_url")``: a part may hold dots). Raised inside a
    model's validator, the key is relative to that model (``""``: the model itself) and the
    loader makes it absolute."""

    def __init__(self, key: str | KeyPath, reason: str, where: str | None = None) -> None:
        self.parts: KeyPath = (tuple(re.findall(r"[^.\[\]]+", key)) if isinstance(key, str)
                               else key)
        self.key = key if isinstance(key, str) else dotted(key)
        super().__init__(f"{self.key}: {reason}")
        self.reason = reason
        self.where = where

    def located(self) -> str:
        """``WHERE: key: reason``, or ``key: reason`` when the source is not known."""
        return f"{self.where}: {self}" if self.where else str(self)


def dotted(parts: KeyPath) -> str:
    """``("routes", "0", "region")`` → ``routes[0].region``."""
    key = ""
    for part in parts:
        if part.isdigit() and key:
            key += f"[{part}]"
        else:
            key = f"{key}.{part}" if key else part
    return key or "(top level)"
