"""K3s's command line: the pinned version's flag lists (data/flags-v1.36.yaml), Go ``flag``-package parsing
as urfave/cli v1 does it for K3s, and the config file merge of K3s's ``configfilearg`` package.

Facts this follows (k3s-io/k3s ``pkg/configfilearg/parser.go``, ``cmd/server/main.go``):
- the config file (``-c``/``--config``, ``$K3S_CONFIG_FILE``, default ``/etc/rancher/k3s/config.yaml``) and
  then ``<file>.d/*.yaml|*.yml`` in directory order are read; ``key+:`` appends to a list, otherwise the last
  file wins; each key becomes ``--key=value`` (a list gives one flag per item), inserted right after the
  subcommand so that command-line flags come later and win;
- a config key that is not a flag of the subcommand is dropped with the warning
  ``Unknown flag --key found in config.yaml, skipping`` and K3s carries on. **The stand-in logs that
  warning and then refuses the key** (a fatal line naming the key, its file and the closest valid key; exit
  1), so that a key a role writes by mistake fails its tests instead of being skipped unnoticed;
- an unknown command-line flag is a usage error: ``Incorrect Usage: flag provided but not defined: -name``
  and the command help on stdout, then ``level=fatal msg="flag provided but not defined: -name"``, exit 1.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .logs import Logger

DEFAULT_CONFIG = "/etc/rancher/k3s/config.yaml"
COMMANDS = {"server": "Run management server", "agent": "Run node agent"}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class UsageError(Exception):
    """A command line the flag parser refuses; the message is Go's ``flag`` package's."""


@dataclass(frozen=True)
class FlagSpec:
    name: str
    takes_value: bool
    repeatable: bool
    alias: str | None
    env: str | None


@cache
def specs(command: str) -> dict[str, FlagSpec]:
    raw = yaml.safe_load(resources.files(__package__).joinpath("data/flags-v1.36.yaml").read_text())
    return {
        name: FlagSpec(name, bool(d.get("v")), bool(d.get("r")), d.get("a"), d.get("e"))
        for name, d in raw[command].items()
    }


def _lookup(command: str) -> dict[str, FlagSpec]:
    table = dict(specs(command))
    for spec in specs(command).values():
        if spec.alias:
            table[spec.alias] = spec
    return table


def _parse_bool(text: str, name: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    msg = f'invalid boolean value "{text}" for -{name}: parse error'
    raise UsageError(msg)


Values = dict[str, Any]


def parse_args(command: str, args: Sequence[str]) -> tuple[Values, list[str]]:
    """Parse flags the way Go's ``flag.FlagSet`` does; returns the values by flag name and the positional
    arguments left over. Repeatable flags collect every occurrence, in order."""
    table = _lookup(command)
    values: Values = {}
    rest = list(args)
    while rest:
        arg = rest[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        dashes = 2 if arg.startswith("--") else 1
        if arg == "--":
            rest.pop(0)
            break
        name = arg[dashes:]
        if not name or name[0] in "-=":
            msg = f"bad flag syntax: {arg}"
            raise UsageError(msg)
        rest.pop(0)
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        spec = table.get(name)
        if spec is None:
            if name in {"help", "h"}:
                values["help"] = True
                continue
            msg = f"flag provided but not defined: -{name}"
            raise UsageError(msg)
        if not spec.takes_value:
            values[spec.name] = True if value is None else _parse_bool(value, name)
            continue
        if value is None:
            if not rest:
                msg = f"flag needs an argument: -{name}"
                raise UsageError(msg)
            value = rest.pop(0)
        if spec.repeatable:
            values.setdefault(spec.name, []).append(value)
        else:
            values[spec.name] = value
    return values, rest


def apply_env(command: str, values: Values, env: Mapping[str, str]) -> Values:
    """Fill flags that were not given from their environment variables (urfave/cli ``EnvVar``)."""
    out = dict(values)
    for spec in specs(command).values():
        if spec.env and spec.name not in out and env.get(spec.env):
            raw = env[spec.env]
            if not spec.takes_value:
                out[spec.name] = _parse_bool(raw, spec.name)
            elif spec.repeatable:
                out[spec.name] = [part for part in raw.split(",") if part]
            else:
                out[spec.name] = raw
    return out


def config_path(args: Sequence[str], env: Mapping[str, str]) -> str:
    if env.get("K3S_CONFIG_FILE"):
        return env["K3S_CONFIG_FILE"]
    for i, arg in enumerate(args):
        for flag in ("--config", "-config", "-c", "--c"):
            if arg == flag:
                return args[i + 1] if i + 1 < len(args) else ""
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1 :]
    return DEFAULT_CONFIG


def _dropins(base: Path) -> list[Path]:
    directory = Path(str(base) + ".d")
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.lower().endswith((".yaml", ".yml"))
    )


def _go_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    text = _go_string(value).strip()
    return [text] if text else []


class ConfigError(Exception):
    """A config file K3s cannot read (missing file named explicitly, bad YAML)."""


@dataclass(frozen=True)
class ConfigArg:
    """One flag a config file stands for: ``--key=value``, its key and the last file that set the key."""

    arg: str
    key: str
    file: Path


def read_config(path: str) -> list[ConfigArg]:
    """The flags a config file and its drop-ins stand for, as ``--key=value`` arguments, in key order."""
    base = Path(path)
    files = _dropins(base)
    if base.is_file():
        files.insert(0, base)
    order: list[str] = []
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            msg = f"yaml: {exc}".replace("\n", " ")
            raise ConfigError(msg) from exc
        except OSError as exc:
            raise ConfigError(f"open {file}: {exc.strerror.lower() if exc.strerror else exc}") from exc
        if not isinstance(data, dict):
            msg = (
                f"yaml: unmarshal errors: cannot unmarshal {type(data).__name__} into yaml.MapSlice in {file}"
            )
            raise ConfigError(msg)
        for raw_key, value in data.items():
            key = _go_string(raw_key)
            append = key.endswith("+")
            key = key.removesuffix("+")
            if key not in merged:
                order.append(key)
            if append and key in merged:
                merged[key] = _as_list(merged[key]) + _as_list(value)
            else:
                merged[key] = value
            origin[key] = file
    out: list[ConfigArg] = []
    for key in order:
        prefix = "-" if len(key) == 1 else "--"
        value = merged[key]
        items = value if isinstance(value, list) else [value]
        out.extend(ConfigArg(f"{prefix}{key}={_go_string(item)}", key, origin[key]) for item in items)
    return out


class UnknownKeyError(ConfigError):
    """Config keys that are not flags of the subcommand (K3s skips them; the stand-in refuses them)."""


def refuse_unknown(command: str, config_args: Sequence[ConfigArg], log: Logger) -> list[str]:
    """The config flags as arguments; K3s's warning for each unknown one, then UnknownKeyError naming them."""
    table = _lookup(command)
    valid = sorted(specs(command))
    problems: list[str] = []
    seen: set[str] = set()
    for item in config_args:
        if item.key in table:
            continue
        # K3s warns once per argument, so a list value warns once per item
        log.warning(f"Unknown flag {item.arg.split('=', 1)[0]} found in config.yaml, skipping\n")
        if item.key in seen:
            continue
        seen.add(item.key)
        close = difflib.get_close_matches(item.key.replace("_", "-"), valid, n=1, cutoff=0.6)
        hint = f'; the closest valid key is "{close[0]}"' if close else ""
        problems.append(f'config key "{item.key}" in {item.file} is not a flag of "k3s {command}"{hint}')
    if problems:
        msg = "; ".join(problems) + " (K3s only warns and skips unknown keys; the K3s stand-in refuses them)"
        raise UnknownKeyError(msg)
    return [item.arg for item in config_args]


def resolve(command: str, cli_args: Sequence[str], env: Mapping[str, str], log: Logger) -> Values:
    """Everything K3s does before it starts: config files, unknown-key refusal, flag parsing, env."""
    path = config_path(cli_args, env)
    config_args: list[str] = []
    if path:
        config_args = refuse_unknown(command, read_config(path), log)
    values, _positional = parse_args(command, [*config_args, *cli_args])
    return apply_env(command, values, env)


def command_help(command: str) -> str:
    lines = [
        "NAME:",
        f"   k3s {command} - {COMMANDS[command]}",
        "",
        "USAGE:",
        f"   k3s {command} [OPTIONS]",
        "",
        "OPTIONS:",
    ]
    for spec in specs(command).values():
        left = f"--{spec.name}" if len(spec.name) > 1 else f"-{spec.name}"
        if spec.takes_value:
            left += " value"
        if spec.alias:
            left += f", -{spec.alias}" + (" value" if spec.takes_value else "")
        env = f" [${spec.env}]" if spec.env else ""
        lines.append(f"   {left}{env}")
    return "\n".join(lines) + "\n"


def getenv() -> dict[str, str]:
    return dict(os.environ)
