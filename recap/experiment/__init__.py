"""Batch experiments: configs, the runner, the report tables."""
