"""The one verifying TLS context for the tests' own httpx clients, as the product's client keeps
one per process (``monitor.upstream.client``): each new client would otherwise read the whole CA
bundle again, about 23 ms of CPU, though the servers it talks to are plain HTTP on loopback.
Verification stays on: an https:// URL given by mistake still fails as it would for a user."""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def tls_context() -> ssl.SSLContext:
    """Pass as ``verify=`` to every ``httpx.Client`` or ``AsyncClient`` a test makes."""
    return httpx.create_ssl_context()
