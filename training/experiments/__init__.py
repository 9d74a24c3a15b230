"""Reproducible experiments: each module runs with ``python -m training.experiments.<name>``."""
