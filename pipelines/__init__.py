"""Stage entry points: `python -m pipelines.<step>` (what `ray job submit` runs) and `clara <step>`."""
