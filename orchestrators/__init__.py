"""Durable orchestrators: deterministic workflow, no I/O (design.md section 3)."""
