"""service: see the module docstrings."""
