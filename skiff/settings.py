"""Reading settings from the environment: fail fast, naming the variable and what it should hold."""

from __future__ import annotations

import os
from collections.abc import Mapping

from skiff.errors import ConfigError


def require(name: str, env: Mapping[str, str] | None = None) -> str:
    value = (os.environ if env is None else env).get(name, "").strip()
    if not value:
        raise ConfigError(f"expected environment variable {name} to be set (got: nothing)")
    return value


def number(name: str, default: float, env: Mapping[str, str] | None = None, minimum: float = 0) -> float:
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"expected environment variable {name} to be a number (got: {raw!r})") from exc
    if value < minimum:
        raise ConfigError(f"expected environment variable {name} >= {minimum} (got: {raw!r})")
    return value


def integer(name: str, default: int, env: Mapping[str, str] | None = None, minimum: int = 0) -> int:
    value = number(name, default, env, minimum)
    if value != int(value):
        raise ConfigError(f"expected environment variable {name} to be a whole number (got: {value})")
    return int(value)


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def boolean(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if env is None else env).get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in TRUE + FALSE:
        raise ConfigError(f"expected environment variable {name} to be true or false (got: {raw!r})")
    return raw in TRUE
