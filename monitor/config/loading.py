"""Reading the config: TOML to validated ``Config``, the roster merge, warnings for
world-readable secrets, and where the API token and channel URLs come from."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import tomli  # tomllib's own parser, compiled: a 100,000-creator file in 0.2 s instead of 0.7 s
from pydantic import SecretStr

from monitor.config.collector import collector_paused
from monitor.config.document import Config
from monitor.config.files import CONFIG_LIMIT, read_bytes, read_token_file
from monitor.config.sections import ChannelConfig
from monitor.config.survey import may_hold_control, survey
from monitor.errors import ConfigError
from monitor.validation import raise_all

log = logging.getLogger("monitor.config")  # the package's name: operators and tests filter on it

TOKEN_ENV = "JUSTONEAPI_TOKEN"  # noqa: S105 - the variable's name, not a secret
CONFIG_ENV = "CREATOR_MONITOR_CONFIG"
CREDENTIAL_NAME = "justoneapi-token"
#: no real API token or channel URL is shorter: a shorter one is a truncated paste or a
#: placeholder, refused here (the log filter does not mask one: it would garble words)
MIN_SECRET = 6


def parse_config(data: Mapping[str, Any], *, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; raises a ConfigError naming every problem's key path
    (a ``ConfigProblems`` when there are several). Roster files are read relative to ``base``
    (the config file's folder; default: the working directory)."""
    config, problems = survey(data, base=Path.cwd() if base is None else base)
    raise_all(problems)
    return config


def load_config(path: Path) -> Config:
    """Read and validate a config file; a ConfigError names every problem (a ``ConfigProblems``
    when there are several). A world-readable file holding a secret gets a warning."""
    config, problems = read_config(path)
    raise_all(problems)
    return config


def read_config(path: Path) -> tuple[Config, list[ConfigError]]:
    """A config file and every problem in it, found in one pass: the schema, control
    characters, the roster and the references between sections (``check`` reports them all
    at once). The Config holds what is valid (an entry with a problem is left out), so the
    checks that need a whole config still run. A file that cannot be read or is not TOML
    raises: nothing else can be said of it."""
    raw = _config_bytes(path)
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark, as Windows editors save, is fine
    except UnicodeDecodeError:
        raise ConfigError(str(path), "config file is not UTF-8 text") from None
    try:
        with collector_paused():
            data = tomli.loads(text)
    except RecursionError:  # tomli's own limit (400 levels) is a RecursionError
        raise ConfigError(
            str(path), "invalid TOML: arrays or tables nested too deeply (a config needs 4 levels)"
        ) from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    config, problems = survey(
        data, base=path.parent, source=(path, text), suspect=may_hold_control(raw)
    )
    if any(c.url is not None for c in config.channels):
        warn_if_exposed(path, "holds channel URLs")
    if storage_password(config.storage.url):
        warn_if_exposed(path, "holds a database password (storage.url)")
    return config, problems


def storage_password(url: str) -> str:
    """The password in ``storage.url`` (``postgresql+asyncpg://user:PASSWORD@host/db``), or
    "" (a secret of the config: PGPASSWORD in the environment keeps it out of the file)."""
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:  # a port that is no number: the config check says so
        return ""


def _config_bytes(path: Path) -> bytes:
    try:
        return read_bytes(path, key=str(path), what="config file", limit=CONFIG_LIMIT)
    except FileNotFoundError:
        raise ConfigError(
            str(path), "config file not found (pass -c PATH or set CREATOR_MONITOR_CONFIG)"
        ) from None


def warn_if_exposed(path: Path, what: str) -> bool:
    """Log a warning when a file with a secret can be read by group or others; True if so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s %s and is readable by other users (mode %o); run: chmod 600 %s",
            path,
            what,
            stat.S_IMODE(mode),
            path,
        )
        return True
    return False


def resolve_token(config: Config, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The API token: ``JUSTONEAPI_TOKEN``, else ``api.token_file``, else systemd's credential."""
    env = os.environ if environ is None else environ
    if token := env.get(TOKEN_ENV, "").strip():
        return _long_enough(TOKEN_ENV, token, f"the API token in {TOKEN_ENV}", "token")
    candidates: list[tuple[str, Path]] = []
    if config.api.token_file is not None:
        candidates.append(("api.token_file", config.api.token_file))
    if cred_dir := env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(("CREDENTIALS_DIRECTORY", Path(cred_dir) / CREDENTIAL_NAME))
    for key, path in candidates:
        try:
            token = read_token_file(key, path, what="API token")
        except FileNotFoundError:
            if key == "api.token_file":
                raise ConfigError(key, f"token file {path} not found") from None
            continue
        if key == "api.token_file":
            warn_if_exposed(path, "holds the API token")
        return _long_enough(key, token, f"the API token in {path}", "token")
    raise ConfigError(
        "api.token_file",
        f"no API token: set {TOKEN_ENV}, api.token_file, "
        f"or a systemd credential '{CREDENTIAL_NAME}'",
    )


def channel_url(channel: ChannelConfig, environ: Mapping[str, str] | None = None) -> SecretStr:
    """A channel's apprise URL, from the file or from the environment variable it names."""
    if channel.url is not None:
        where = f"the URL of channel {channel.name!r}"
        return _long_enough(f"channels[{channel.name}].url", channel.url, where, "channel URL")
    env = os.environ if environ is None else environ
    value = env.get(channel.url_env or "", "").strip()
    key = f"channels[{channel.name}].url_env"
    if not value:
        raise ConfigError(key, f"environment variable {channel.url_env!r} is not set or empty")
    where = f"environment variable {channel.url_env!r}"
    return _long_enough(key, value, where, "channel URL (SCHEME://…)")


def _long_enough(key: str, secret: str | SecretStr, where: str, what: str) -> SecretStr:
    """``secret``, refused when it is too short to be real (its length is named, never it)."""
    value = secret if isinstance(secret, SecretStr) else SecretStr(secret)
    size = len(value.get_secret_value())
    if size < MIN_SECRET:
        raise ConfigError(
            key,
            f"{where} holds {size} character{'s' if size != 1 else ''}, too short to be a "
            f"real {what}; set the whole value",
        )
    return value
