"""Reporting: the HTML report, scheduled reports and the daily digest."""
