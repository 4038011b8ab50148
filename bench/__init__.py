"""Rill's benchmarks: ``bench/run.py`` (side by side with its peers), ``bench/quick.py``."""
