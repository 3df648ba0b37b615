"""Benchmark scripts: each prints markdown tables; see bench/README.md."""
