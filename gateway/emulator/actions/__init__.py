"""The ECR actions; importing this package registers every handler with the dispatcher."""

from gateway.emulator.actions import auth, images, layers, referrers, repositories

__all__ = ["auth", "images", "layers", "referrers", "repositories"]
