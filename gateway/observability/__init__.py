"""Operability: Prometheus metrics (:mod:`.metrics`) and structured logs (:mod:`.logs`)."""
