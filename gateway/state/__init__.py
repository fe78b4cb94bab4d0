"""Where upload sessions live between requests: ``local`` (this process, spilled to disk)."""
