"""Evaluation: docs/design.md section 8 metrics, dataset loaders, baseline retrievers, harness, report."""
