"""Alerting: stored history to alert transitions and their messages; rule backtests."""
