"""Whether the upstream answers at all: a run of calls that got no answer (refused, timed out,
reset, DNS) is one failure, logged once when it starts and once when it ends, and shown by
``/healthz``. Codes the upstream answers with (301, 500, 601 …) are answers: not this concern.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: calls in a row without an answer before the upstream counts as unreachable
UNREACHABLE_AFTER = 3


class Reach:
    """Fed with every call's outcome (``observe``); says why the upstream is unreachable."""

    def __init__(self, where: str, threshold: int = UNREACHABLE_AFTER) -> None:
        self.where = where
        self._threshold = threshold
        self._failed = 0
        self._since: datetime | None = None
        self._down = False

    def observe(self, answered: bool, now: datetime) -> None:
        """One call ended: ``answered`` when any response came back (an error code included)."""
        if answered:
            if self._down and self._since is not None:
                log.info(
                    "the upstream %s answers again (unreachable for %s, %d calls failed)",
                    self.where,
                    str(now - self._since).split(".")[0],
                    self._failed,
                )
            self._failed, self._since, self._down = 0, None, False
            return
        self._failed += 1
        if self._since is None:
            self._since = now
        if not self._down and self._failed >= self._threshold:
            self._down = True
            log.error("%s", self.problem())

    def problem(self) -> str | None:
        """One line while the upstream is unreachable, else None."""
        if not self._down or self._since is None:
            return None
        return (
            f"cannot reach the upstream {self.where} since {self._since:%Y-%m-%d %H:%M:%S} UTC "
            f"({self._failed} calls in a row got no answer): check api.base_url, the network "
            "and proxy settings"
        )


def upstream_host(base_url: str) -> str:
    """``host:port`` of the upstream, for a log line (never a user name or password)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname or base_url}:{port}"
