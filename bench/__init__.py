"""Benchmarks, run on demand (not in CI)."""
