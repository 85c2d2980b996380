"""Benchmarks (run as modules, e.g. `python -m benchmarks.input_pipeline`)."""
