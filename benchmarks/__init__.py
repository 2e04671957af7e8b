"""Speed and measurement scripts (run from the repository root, e.g. `python -m benchmarks.bench`)."""
