"""Dataclass configs driven from the command line: ``--config file.{json,yaml}`` plus one flag per field.

Every subcommand is a thin driver over one dataclass (as in tevatron): transformers' ``HfArgumentParser``
adds the flags (:func:`add_command`, :func:`command_line`), ``dataclass_from_args`` builds the config (file values first,
explicit flags override). Settings passed through to another dataclass are ``KEY=VALUE`` pairs
(:func:`key_values`), typed by that dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

from grace.errors import InputError

T = TypeVar("T")


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


class CommandParser(HfArgumentParser):
    """``HfArgumentParser`` whose boolean fields are switches (``--flag`` / ``--no-flag``, no value), so a flag
    never takes the next word of the command line as its value (``grace search --json "red heart"``)."""

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        if field.type is not bool:
            HfArgumentParser._parse_dataclass_field(parser, field)
            return
        flags = dict.fromkeys([f"--{field.name}", _flag(field.name)])
        default = False if field.default is dataclasses.MISSING else field.default
        parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default,
                            help=field.metadata.get("help"))


def _flags_over_file(parser: HfArgumentParser, cls: type) -> HfArgumentParser:
    """Add ``--config``, show each field's default in its help, and suppress the flags' parser defaults, so the
    namespace holds only what the user typed (:func:`dataclass_from_args` puts it over the config file; the
    dataclass supplies the rest)."""
    parser.add_argument("--config", type=Path, default=None, help="JSON or YAML file with config values")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        if action.dest not in fields or action.default is argparse.SUPPRESS:
            continue
        action.help = f"{action.help or ''} (default: {action.default})".strip()
        action.default = argparse.SUPPRESS  # (not set_defaults: a subparser copies those into the namespace)
    return parser


def command_line(cls: type, description: str | None = None) -> HfArgumentParser:
    """A script's parser over dataclass ``cls`` (:class:`CommandParser`: ``--field-name`` / ``--field_name``,
    ``--flag`` / ``--no-flag`` for booleans, several values for a list field) with ``--config``."""
    return _flags_over_file(CommandParser([cls], description=description), cls)


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
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})
    return dataclass_from_dict(cls, values, source=str(config_path or "command line"))


def add_command(subparsers: argparse._SubParsersAction, name: str, cls: type, func: Any,
                help: str | None = None, **parser_kwargs: Any) -> HfArgumentParser:
    """A subcommand that is a thin driver over dataclass ``cls``: its flags (as :func:`command_line`), and
    ``func(args)`` to run it. ``help`` defaults to the first line of the dataclass docstring. ``subparsers``
    must make :class:`CommandParser`s (the ``grace`` parser's do)."""
    text = help if help is not None else (cls.__doc__ or "").strip().splitlines()[0]
    parser_kwargs.setdefault("description", text)
    parser = _flags_over_file(subparsers.add_parser(name, help=text, dataclass_types=[cls], **parser_kwargs), cls)
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


def key_values(items: list[str], option: str, types: type | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` settings (``--train-overrides max_length=96 warmup_steps=30``) as a dict. With ``types`` (a
    dataclass), each key must be one of its fields and each value is converted to the field's type; without,
    a value is read as a YAML scalar or list (``3``, ``0.5``, ``true``, ``[1, 2]``, else the text itself).
    Anything else is a one-line error naming the option."""
    import yaml

    hints = typing.get_type_hints(types) if types is not None else {}
    fields = {f.name for f in dataclasses.fields(types) if f.init} if types is not None else set()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"{option} takes KEY=VALUE settings, got {item!r}")
        if types is not None and key not in fields:
            raise InputError(f"{option}: {key!r} is not a {types.__name__} field; known: {sorted(fields)}")
        tp = _base_type(hints[key]) if key in hints else None
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if tp is str or tp is Path:
            value = tp(text)
        elif tp is bool and not isinstance(value, bool):
            raise InputError(f"{option}: {key} takes true or false, got {text!r}")
        elif tp in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{option}: {key} takes a number, got {text!r}")
        elif tp is float:
            value = float(value)
        elif tp is int and isinstance(value, float):
            raise InputError(f"{option}: {key} takes an integer, got {text!r}")
        out[key] = value
    return out
