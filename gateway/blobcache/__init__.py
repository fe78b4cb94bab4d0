"""A local, content-addressed cache of blob bytes (see :mod:`gateway.blobcache.store`)."""

from gateway.blobcache.store import BlobCache, BlobFill, CachedBlob

__all__ = ["BlobCache", "BlobFill", "CachedBlob"]
