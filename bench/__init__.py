"""Benchmarks: `python -m bench.<name>`, each printing ratios against a baseline from the same run."""
