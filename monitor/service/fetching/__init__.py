"""Fetching: the schedule, the one gate, the fetch of one series, held answers, reach."""
