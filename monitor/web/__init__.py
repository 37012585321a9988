"""The console: server-rendered pages and the JSON API under ``/api/v1/`` (aiohttp, jinja2),
with tokens, sessions and CSRF. Served by ``run`` beside /healthz and /metrics, and by ``serve``.
"""
