"""Hotline benchmark (not part of the default test run): ``python -m tests.bench.run``."""
