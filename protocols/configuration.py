"""Checking a TOML config file against its schema (a pydantic model), with one-line errors.

Shared by the gateway's and the cloud's config loaders so that both say what is wrong the same
way: ``gateway.toml: uplink.window: Input should be greater than 0``. Pure: callers read the file.
"""

import tomllib
from typing import TypeVar

from pydantic import BaseModel, ValidationError

C = TypeVar("C", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used. ``str()`` is one line naming the file, the key and the problem.
    Command-line entry points print it and exit with status 2."""


def parse_config(text: str, model: type[C], source: str) -> C:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        key, problem = first_problem(e)
        raise ConfigError(f"{source}: {key or '(top level)'}: {problem}") from None


def first_problem(e: ValidationError, prefix: str = "") -> tuple[str, str]:
    """The dotted key of a validation error's first problem (under ``prefix``) and what is wrong,
    with a count of the others: the one line every config error is told in."""
    first = e.errors()[0]
    key = ".".join(str(x) for x in (prefix, *first["loc"]) if x != "")
    msg = "unknown key (misspelt?)" if first["type"] == "extra_forbidden" else first["msg"]
    more = e.error_count() - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return key, msg + tail


def read_config(path: str, model: type[C]) -> C:
    """Read and check ``path``. A missing or unreadable file is a ConfigError too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(text, model, path)
