"""What ``run`` reads beside the config, checked by one function that ``check`` and ``run``
share: the API token, the console's token files, and the templates in ``notify.templates_dir``.
Must not: open the network or the database.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from monitor.config.document import Config
from monitor.config.files import TEMPLATE_LIMIT, read_text, read_token_file
from monitor.config.loading import resolve_token, warn_if_exposed
from monitor.errors import ConfigError
from monitor.validation import problems_of, raise_all

#: systemd credential holding the console's admin token (LoadCredential=)
HTTP_CREDENTIAL = "creator-monitor-http-token"
#: systemd credential holding the console's read-only token: a ``DynamicUser=`` service cannot
#: read a root-owned 0600 file, so both console tokens have a credential route
HTTP_READONLY_CREDENTIAL = "creator-monitor-http-readonly-token"
#: the shortest console token accepted: 16 characters of a random token are 80+ bits, out of
#: reach of guessing over HTTP; ``python3 -c 'import secrets; print(secrets.token_urlsafe(32))'``
CONSOLE_TOKEN_MIN = 16
#: the templates a ``notify.templates_dir`` may override (monitor/notify/templates)
TEMPLATE_NAMES = tuple(
    f"{kind}.{language}.j2" for kind in ("alert", "account", "digest") for language in ("en", "zh")
)


@dataclass(frozen=True, slots=True)
class ConsoleTokens:
    admin: SecretStr | None
    readonly: SecretStr | None


def startup_problems(
    config: Config, environ: Mapping[str, str] | None = None, *, api_token: bool = True
) -> list[ConfigError]:
    """Every problem with the files ``run`` reads at start beside the config: the API token
    (unless ``api_token`` is False: ``check --no-token``), the console tokens and the
    templates. ``check`` reports them; ``run`` refuses to start on any."""
    problems: list[ConfigError] = []
    if api_token:
        try:
            resolve_token(config, environ)
        except ConfigError as exc:
            problems.append(exc)
    try:
        console_tokens(config, environ)
    except ConfigError as exc:
        problems += problems_of(exc)
    problems += template_problems(config.notify.templates_dir)
    return problems


def _console_token(key: str, path: Path, *, required: bool, what: str) -> SecretStr | None:
    try:
        token = read_token_file(key, path, shortest=CONSOLE_TOKEN_MIN, what=what)
    except FileNotFoundError:
        if required:
            raise ConfigError(key, f"token file {path} not found") from None
        return None
    if required:
        warn_if_exposed(path, "holds a console token")
    return SecretStr(token)


def console_tokens(config: Config, environ: Mapping[str, str] | None = None) -> ConsoleTokens:
    """The console's admin token from ``http.token_file``, else systemd's credential
    ``creator-monitor-http-token``; the read-only one from ``http.readonly_token_file``, else
    the credential ``creator-monitor-http-readonly-token``. Each at least CONSOLE_TOKEN_MIN
    characters, and the two different."""
    env = os.environ if environ is None else environ
    problems: list[ConfigError] = []
    admin = readonly = None
    try:
        if config.http.token_file is not None:
            admin = _console_token(
                "http.token_file", config.http.token_file, required=True, what="console token"
            )
        elif cred_dir := env.get("CREDENTIALS_DIRECTORY"):
            admin = _console_token(
                "CREDENTIALS_DIRECTORY",
                Path(cred_dir) / HTTP_CREDENTIAL,
                required=False,
                what="console token",
            )
    except ConfigError as exc:
        problems.append(exc)
    try:
        if config.http.readonly_token_file is not None:
            readonly = _console_token(
                "http.readonly_token_file",
                config.http.readonly_token_file,
                required=True,
                what="read-only console token",
            )
        elif cred_dir := env.get("CREDENTIALS_DIRECTORY"):
            readonly = _console_token(
                "CREDENTIALS_DIRECTORY",
                Path(cred_dir) / HTTP_READONLY_CREDENTIAL,
                required=False,
                what="read-only console token",
            )
    except ConfigError as exc:
        problems.append(exc)
    if (
        admin is not None
        and readonly is not None
        and hmac.compare_digest(admin.get_secret_value(), readonly.get_secret_value())
    ):
        problems.append(
            ConfigError("http.readonly_token_file", "the read-only token equals the admin token")
        )
    raise_all(problems)
    return ConsoleTokens(admin, readonly)


def console_secrets(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """The console's tokens as far as they can be read, quietly (no warning, no error), for the
    log filter to mask: a client's oversized ``Authorization`` header comes back in aiohttp's
    own log line. ``console_tokens`` is the reader that checks them."""
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    paths = [config.http.token_file, config.http.readonly_token_file]
    if cred_dir:
        paths += [Path(cred_dir) / HTTP_CREDENTIAL, Path(cred_dir) / HTTP_READONLY_CREDENTIAL]
    found = []
    for path in paths:
        if path is None:
            continue
        try:
            found.append(read_token_file("http", path))
        except (ConfigError, OSError):
            continue
    return found


def template_problems(directory: Path | None) -> list[ConfigError]:
    """Why ``notify.templates_dir`` cannot serve its templates: missing, not a folder, holding
    none of the templates, or a template that is not a readable regular file of at most 1 MiB
    of UTF-8 text in Jinja syntax. Empty when it can (or none is configured)."""
    key = "notify.templates_dir"
    if directory is None:
        return []
    if not directory.exists():
        return [ConfigError(key, f"folder {directory} not found")]
    if not directory.is_dir():
        return [ConfigError(key, f"{directory} is not a folder")]
    present = [name for name in TEMPLATE_NAMES if os.path.lexists(directory / name)]
    if not present:
        return [
            ConfigError(
                key,
                f"{directory} holds none of the templates ({', '.join(TEMPLATE_NAMES)}); "
                "copy the ones to change from monitor/notify/templates",
            )
        ]
    import jinja2  # only with templates_dir: not at every start

    problems = []
    parser = jinja2.Environment(autoescape=False)  # noqa: S701 - parsed only, never rendered
    for name in present:
        try:
            source = read_text(
                directory / name, key=key, what=f"template {name}:", limit=TEMPLATE_LIMIT
            )
            parser.parse(source, name)
        except FileNotFoundError:  # a dangling link
            problems.append(ConfigError(key, f"template {name} links to a missing file"))
        except ConfigError as exc:
            problems.append(exc)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(ConfigError(key, f"template {name} line {exc.lineno}: {exc.message}"))
    return problems
