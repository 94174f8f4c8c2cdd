"""Benchmarks: run as modules from the repository root (python -m bench.split), JSON in bench/results/."""
