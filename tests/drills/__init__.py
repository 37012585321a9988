"""Fault drills (issue 7): short forms run in the normal suite (``pytest -m drills``); the long
forms run from ``bench/drills.py``. Each drill counts what was lost, duplicated, overspent or
leaked."""
