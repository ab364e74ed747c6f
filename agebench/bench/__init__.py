"""Benchmarking: the runner (one process per cell), the cell itself, the profiler and provenance."""
