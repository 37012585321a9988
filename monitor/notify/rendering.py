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

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment

from monitor.config.files import TEMPLATE_LIMIT, read_text
from monitor.display import format_pct, format_value
from monitor.notify.message import (
    ACCOUNT_SCOPE,
    AlertView,
    Digest,
    Language,
    Message,
    MessageContext,
    alert_variables,
    digest_variables,
    human_duration,
)

BUILTIN_DIR = Path(__file__).parent / "templates"


class _RegularFileLoader(FileSystemLoader):
    """A user's templates, each read as ``check`` reads it: a regular file of at most 1 MiB,
    opened without blocking (a FIFO or /dev/zero named like a template is refused, and the
    built-in template is used)."""

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = Path(self.searchpath[0], *split_template_path(template))
        try:
            source = read_text(
                path, key="notify.templates_dir", what="template", limit=TEMPLATE_LIMIT
            )
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            raise TemplateNotFound(template) from None

        def unchanged() -> bool:
            try:
                return path.stat().st_mtime == mtime
            except OSError:
                return False

        return source, str(path), unchanged


def _environment(directory: Path, *, user: bool = False) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=_RegularFileLoader(directory) if user else FileSystemLoader(directory),
        undefined=StrictUndefined,
        autoescape=False,  # Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda value, metric=None: format_value(metric, value)
    env.filters["pct"] = format_pct
    env.filters["duration"] = lambda seconds, language="en": human_duration(
        timedelta(seconds=float(seconds)), language
    )
    return env


def _split(text: str) -> tuple[str, str]:
    title, _, body = text.strip().partition("\n")
    return title.strip(), body.strip() + "\n"


class Renderer:
    """Renders from the user's templates_dir when it has the template, else the built-in one."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        self._builtin = _environment(BUILTIN_DIR)
        self._user_dir = templates_dir
        self._user = None if templates_dir is None else _environment(templates_dir, user=True)

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
        user, user_dir = self._user, self._user_dir
        if user is not None and user_dir is not None and (user_dir / name).is_file():
            try:
                return Message(*_split(user.get_template(name).render(variables)))
            # a user template may fail in any way (syntax, undefined, sandbox, 1/0): fall back
            except Exception as exc:  # noqa: BLE001
                error = f"template {name}: {type(exc).__name__}: {exc}"
        title, body = _split(self._builtin.get_template(name).render(variables))
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
