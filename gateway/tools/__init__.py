"""Operator commands: ``check-config``, ``iam-policy`` and ``doctor``."""
