"""Dataclass configs driven from the command line: ``--config file.{json,yaml}`` plus one flag per field.

Every subcommand is a thin driver over one dataclass (as in tevatron): ``add_dataclass_args`` adds the
flags, ``dataclass_from_args`` builds the config (file values first, explicit flags override).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from grace.errors import InputError

T = TypeVar("T")
_UNSET = object()


#: metadata of the ``--image-root`` option of every command that reads the image files a Karpathy JSON names
IMAGE_ROOT_HELP = {"help": "folder holding the dataset's images (Karpathy: ROOT/[filepath/]filename; default: the "
                           "JSON's images/ folder, else its own folder), e.g. the unpacked flickr30k-images/"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] and return the underlying type."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, config_flag: bool = True) -> None:
    """Add ``--config`` and one ``--field-name`` flag per dataclass field (defaults stay in the class)."""
    if config_flag:
        parser.add_argument("--config", type=Path, default=None, help="JSON or YAML file with config values")
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        tp = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": field.name, "default": _UNSET, "help": f"{help_text} (default: {default})"}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (str,)
            kwargs.update(nargs="+", type=inner if inner is not Ellipsis else str)
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        else:
            kwargs["type"] = str
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        parser.add_argument(_flag(field.name), **kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path=path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types
        raise InputError(f"cannot parse config: {exc}".splitlines()[0], path=path) from None
    if not isinstance(data, dict):
        raise InputError("config must be a mapping of field names to values", path=path)
    return data


def dataclass_from_dict(cls: type[T], values: dict[str, Any], *, source: str = "config") -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and converting paths/tuples."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown config keys {unknown}; known: {sorted(names)}", path=source)
    converted = {}
    for key, value in values.items():
        tp = _base_type(hints[key])
        if value is not None and tp is Path:
            value = Path(value)
        elif value is not None and typing.get_origin(tp) is tuple:
            value = tuple(value)
        converted[key] = value
    return cls(**converted)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Config file values (``args.config``) overridden by the flags the user actually passed."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path is not None:
        values.update(load_config_file(config_path))
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, _UNSET)
        if value is not _UNSET:
            values[field.name] = value
    return dataclass_from_dict(cls, values, source=str(config_path or "command line"))


def add_command(subparsers: argparse._SubParsersAction, name: str, cls: type, func: Any,
                help: str | None = None, **parser_kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand that is a thin driver over dataclass ``cls``: its flags, and ``func(args)`` to run it.
    ``help`` defaults to the first line of the dataclass docstring."""
    text = help if help is not None else (cls.__doc__ or "").strip().splitlines()[0]
    parser = subparsers.add_parser(name, help=text, **parser_kwargs)
    add_dataclass_args(parser, cls)
    parser.set_defaults(func=func)
    return parser


def require(config: Any, *names: str) -> None:
    """One-line error for options a command needs but the config left unset (``None``)."""
    from grace.errors import GraceError

    missing = [n for n in names if getattr(config, n) is None]
    if missing:
        raise GraceError(f"missing required option(s): {', '.join(_flag(n) for n in missing)}")


def add_command_group(subparsers: argparse._SubParsersAction, name: str, help: str,
                      commands: dict[str, tuple[type, Any]]) -> argparse._SubParsersAction:
    """``grace … NAME VERB``: one :func:`add_command` per ``{verb: (dataclass, handler)}``."""
    sub = subparsers.add_parser(name, help=help).add_subparsers(
        dest=f"{name.replace('-', '_')}_command", required=True, metavar="COMMAND")
    for verb, (cls, handler) in commands.items():
        add_command(sub, verb, cls, handler)
    return sub


def json_options(text: str, option: str) -> dict:
    """A JSON-object option (``""`` = none); anything else is a one-line error naming the option."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{option} is not valid JSON ({err.msg} at character {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object like '{{\"key\": value}}', got {text!r}")
    return value
