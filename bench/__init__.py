"""Benchmarks for the voice media server (run from the repository root)."""
