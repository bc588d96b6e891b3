"""Evaluation: SPEC section 8 metrics, dataset loaders, baseline retrievers, harness, report."""
