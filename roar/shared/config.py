"""Where the shared store is: ROAR_SHARED, else `shared = "postgresql://..."`
in $ROAR_HOME/config.toml, else in /etc/roar/config.toml.

ROAR_SHARED set to the empty string turns the shared store off for this
process whatever the files say. Nothing here imports psycopg: the run path
reads no configuration at all (the outbox is written unconditionally)."""

from __future__ import annotations

import os

from roar.record.store import StoreError

SYSTEM_CONFIG = "/etc/roar/config.toml"  # paths are str here: `roar run` imports no pathlib


class ConfigError(StoreError):
    """A config file roar cannot read; the message names it."""


def config_files(home: str | os.PathLike) -> list[str]:
    """The config files read, first match wins: the store home's, the system's."""
    return [os.path.join(home, "config.toml"), SYSTEM_CONFIG]


def shared_url(home: str | os.PathLike) -> str | None:
    """The shared store's libpq URL (or conninfo), or None when none is set."""
    env = os.environ.get("ROAR_SHARED")
    if env is not None:
        return env.strip() or None
    for i, path in enumerate(config_files(home)):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            continue
        except PermissionError:
            if i == 0:  # in someone else's ROAR_HOME: the store says so itself
                continue
            raise ConfigError(f"cannot read {path}: permission denied") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        url = data.get("shared")
        if url is None:
            continue
        if not isinstance(url, str):
            raise ConfigError(f"{path}: shared must be a string (postgresql://...)")
        return url.strip() or None
    return None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "the shared store"
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
