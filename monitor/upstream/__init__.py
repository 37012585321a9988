"""upstream: see the module docstrings."""
