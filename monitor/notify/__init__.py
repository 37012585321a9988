"""notify: see the module docstrings."""
