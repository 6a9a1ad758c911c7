"""The trainer's flags, generated from TrainConfig: names, types, defaults and help.

fire parses a value by its look (`--run-id 1e3` becomes 1000.0, `--promote false` is a
true string) and complains about unknown flags only after the function ran. Here each
value is parsed by its field's type and every flag is checked before anything starts;
the help is generated from the same fields.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from trainer.commandline import flag
from trainer.config import ConfigError, TrainConfig

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_TYPES = typing.get_type_hints(TrainConfig)


def fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _convert(name: str, raw: str) -> Any:
    kind = _TYPES[name]
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(
            f"invalid {flag(name)} {raw!r}: expected one of {', '.join(_TRUE + _FALSE)}"
        )
    # Numbers stay text here; TrainConfig checks them and names the flag.
    return raw


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """`--name value` / `--name=value` pairs -> {field: value}, checked against TrainConfig.

    A bool flag alone (`--promote`) means true. Raises ConfigError on an unknown flag, a
    repeated flag, a positional argument or a missing value, naming it.
    """
    known = fields()
    out: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: options are --name value (see --help)")
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in known:
            raise ConfigError(
                f"unknown flag --{name}: expected one of {', '.join(flag(k) for k in known)}"
            )
        if key in out:
            raise ConfigError(f"flag --{name} given twice")
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if _TYPES[key] is bool and (nxt is None or nxt.startswith("--")):
                value = "true"
            elif nxt is None:
                raise ConfigError(f"flag --{name} needs a value")
            else:
                value = nxt
                i += 1
        out[key] = _convert(key, value)
        i += 1
    return out


def config_from_args(argv: Sequence[str]) -> TrainConfig:
    return TrainConfig(**parse_args(argv))


def _default(f: dataclasses.Field) -> Any:
    value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return ",".join(value) if isinstance(value, tuple) else value


def help_text(name: str, summary: str, epilogue: str = "") -> str:
    """Usage, then one entry per TrainConfig field: flag, type, default, help."""
    lines = [f"usage: {name} [--flag value ...]", "", summary, "", "flags:"]
    for f in dataclasses.fields(TrainConfig):
        kind = _TYPES[f.name]
        kind_name = "list" if f.name == "neighbours" else getattr(kind, "__name__", str(kind))
        lines.append(f"  {flag(f.name)} {kind_name.upper()}  (default: {_default(f)!r})")
        lines.append(f"      {f.metadata['help']}")
    if epilogue:
        lines += ["", epilogue]
    return "\n".join(lines) + "\n"


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)
