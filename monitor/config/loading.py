"""Reading the config: TOML to validated ``Config``, the roster merge, warnings for
world-readable secrets, and where the API token and channel URLs come from."""

from __future__ import annotations

import gc
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli  # tomllib's own parser, compiled: a 100,000-creator file in 0.2 s instead of 0.7 s
from pydantic import SecretStr, ValidationError

from monitor.config.document import Config, cross_check, keys_at
from monitor.config.rules import RULE_KINDS
from monitor.config.sections import ChannelConfig
from monitor.errors import ConfigError
from monitor.validation import pydantic_problems, raise_all

log = logging.getLogger("monitor.config")  # the package's name: operators and tests filter on it

TOKEN_ENV = "JUSTONEAPI_TOKEN"  # noqa: S105 - the variable's name, not a secret
CONFIG_ENV = "CREATOR_MONITOR_CONFIG"
CREDENTIAL_NAME = "justoneapi-token"


def parse_config(data: Mapping[str, Any], *, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; raises a ConfigError naming every problem's key path
    (a ``ConfigProblems`` when there are several). Roster files are read relative to ``base``
    (the config file's folder; default: the working directory)."""
    try:
        with collector_paused():
            config = Config.model_validate(data)
    except ValidationError as exc:
        raise_all(pydantic_problems(exc, tags=RULE_KINDS, keys_at=keys_at))
        raise  # unreachable: pydantic reports at least one error
    if config.roster.files:
        from monitor.roster import with_roster  # roster builds on this module's models

        config = with_roster(config, Path.cwd() if base is None else base)
    raise_all(cross_check(config))
    return config


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while a large, long-lived structure is built
    (the creators, the schedule): it would walk the new objects every 700 allocations and all
    of them each time they grew by a quarter, half a second of a 100,000-creator start. Nothing
    is lost meanwhile: garbage with cycles waits for the collector, the rest goes as always."""
    if not gc.isenabled():
        yield  # an outer pause holds it already
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_config(path: Path) -> Config:
    """Read and validate a config file; a world-readable file holding a secret gets a warning."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), "config file not found (pass -c PATH or set CREATOR_MONITOR_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config: {exc.strerror}") from None
    try:
        with collector_paused():
            data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "config is not UTF-8 text") from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    config = parse_config(data, base=path.parent)
    if any(c.url is not None for c in config.channels):
        warn_if_exposed(path, "holds channel URLs")
    return config


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
        return SecretStr(token)
    candidates: list[tuple[str, Path]] = []
    if config.api.token_file is not None:
        candidates.append(("api.token_file", config.api.token_file))
    if cred_dir := env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(("CREDENTIALS_DIRECTORY", Path(cred_dir) / CREDENTIAL_NAME))
    for key, path in candidates:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if key == "api.token_file":
                raise ConfigError(key, f"token file {path} not found") from None
            continue
        except OSError as exc:
            raise ConfigError(key, f"cannot read token file {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(key, f"token file {path} is empty")
        if key == "api.token_file":
            warn_if_exposed(path, "holds the API token")
        return SecretStr(token)
    raise ConfigError(
        "api.token_file",
        f"no API token: set {TOKEN_ENV}, api.token_file, "
        f"or a systemd credential '{CREDENTIAL_NAME}'",
    )


def channel_url(channel: ChannelConfig, environ: Mapping[str, str] | None = None) -> SecretStr:
    """A channel's apprise URL, from the file or from the environment variable it names."""
    if channel.url is not None:
        return channel.url
    env = os.environ if environ is None else environ
    value = env.get(channel.url_env or "", "").strip()
    if not value:
        raise ConfigError(
            f"channels[{channel.name}].url_env",
            f"environment variable {channel.url_env!r} is not set or empty",
        )
    return SecretStr(value)
