"""creator-monitor: keeps watch over Xiaohongshu creators through Just One API."""

from __future__ import annotations

__version__ = "0.1.0"
