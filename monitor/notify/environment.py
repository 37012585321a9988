"""The Jinja2 environments ``rendering.Renderer`` renders in: the built-in templates' and a
user's ``notify.templates_dir`` (each file read as ``check`` reads it), sandboxed, with the
message filters. A module of its own so that Jinja2 is imported at the first message, not at
every start."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment

from monitor.config.files import TEMPLATE_LIMIT, read_text
from monitor.display import format_pct, format_value
from monitor.notify.message import human_duration


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


def environment(directory: Path, *, user: bool = False) -> SandboxedEnvironment:
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
