"""A dead or misspelt channel never keeps the daemon (and the healthy channels) from running."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.store import Store

BAD_URL = "jsno://127.0.0.1:9/secret-hook-path"


async def test_a_misspelt_channel_is_logged_once_and_the_rest_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"},
            "channels": [
                {"name": "typo", "url": BAD_URL},
                {"name": "good", "url": "json://127.0.0.1:9/hook"},
            ],
        }
    )
    daemon = Daemon(config, Options(environ={}))
    daemon.store = Store.open(config.storage.url)
    try:
        with caplog.at_level(logging.ERROR, logger="monitor.daemon"):
            notifier = daemon._make_notifier(config)
        assert set(notifier.problems) == {"typo"}
        errors = [r.getMessage() for r in caplog.records if r.name == "monitor.daemon"]
        assert len(errors) == 1
        assert errors[0].startswith("channel 'typo': ")
        assert "dead-lettered" in errors[0]
        assert "secret-hook-path" not in errors[0]
        notifier.close()
    finally:
        await daemon.store.close()
