"""Message rendering: the built-in Jinja2 templates, run in a sandbox and overridable per file
from ``notify.templates_dir``, turn the variables of ``notify.message`` into a Markdown Message
(title, body). Must not send anything or touch the database.

Templates: ``alert.{en,zh}.j2`` (one creator), ``account.{en,zh}.j2`` (scope 'account'),
``digest.{en,zh}.j2``. The first output line is the title, the rest the Markdown body. A user
template with the same file name replaces the built-in one; if it fails to compile or render, the
built-in one is used and ``Message.error`` says why. Undefined variables are errors.

Filters: ``num(metric)`` formats a metric value, ``pct`` a signed percentage,
``duration(language)`` a number of seconds ("2d 3h").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.notify.message import (
    ACCOUNT_SCOPE,
    AlertView,
    Digest,
    Language,
    Message,
    MessageContext,
    alert_variables,
    digest_variables,
)

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

BUILTIN_DIR = Path(__file__).parent / "templates"


def _split(text: str) -> tuple[str, str]:
    title, _, body = text.strip().partition("\n")
    return title.strip(), body.strip() + "\n"


class Renderer:
    """Renders from the user's templates_dir when it has the template, else the built-in one."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        self._user_dir = templates_dir
        # made at the first message: Jinja2 is not loaded before the daemon is READY (the
        # alerting side holds a Renderer from the start)
        self._environments: tuple[SandboxedEnvironment, SandboxedEnvironment | None] | None = None

    def _made(self) -> tuple[SandboxedEnvironment, SandboxedEnvironment | None]:
        """The built-in templates' environment and the user's (None without templates_dir)."""
        if self._environments is None:
            from monitor.notify.environment import environment

            user_dir = self._user_dir
            self._environments = (
                environment(BUILTIN_DIR),
                None if user_dir is None else environment(user_dir, user=True),
            )
        return self._environments

    def render(
        self, event: str, alert: AlertView, context: MessageContext, language: Language
    ) -> Message:
        """An alert event ('firing' | 'repeat' | 'resolved') as a Message."""
        kind = "account" if alert.scope == ACCOUNT_SCOPE else "alert"
        variables = alert_variables(event, alert, context, language)
        return self._render(f"{kind}.{language}.j2", variables)

    def render_digest(self, digest: Digest, context: MessageContext, language: Language) -> Message:
        return self._render(f"digest.{language}.j2", digest_variables(digest, context, language))

    def _render(self, name: str, variables: Mapping[str, Any]) -> Message:
        error = None
        builtin, user = self._made()
        user_dir = self._user_dir
        if user is not None and user_dir is not None and (user_dir / name).is_file():
            try:
                return Message(*_split(user.get_template(name).render(variables)))
            # a user template may fail in any way (syntax, undefined, sandbox, 1/0): fall back
            except Exception as exc:  # noqa: BLE001
                error = f"template {name}: {type(exc).__name__}: {exc}"
        title, body = _split(builtin.get_template(name).render(variables))
        return Message(title, body, error)


def render(
    event: str,
    alert: AlertView,
    context: MessageContext,
    language: Language,
    templates_dir: Path | None = None,
) -> Message:
    """One-shot form of ``Renderer(templates_dir).render(...)``."""
    return Renderer(templates_dir).render(event, alert, context, language)
