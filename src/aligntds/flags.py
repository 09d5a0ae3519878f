"""Flags declared once: a script's options are a dataclass whose fields are its flags (name, type, default, help text,
choices), turned into an argparse parser here. The dataclass is what the library takes (`analysis.run(ScoreOptions)`),
so a new flag is one field, and its default and choices live nowhere else.

    @dataclass(kw_only=True)
    class Options(Flags):
        data_file: str = flag("the data file")                    # no default: required, --data_file DATA_FILE
        top_k: int = flag("candidates per position", 30)         # --top_k N; the help ends "(default: 30)"
        dtype: str = flag("model dtype", "auto", choices=("auto", "float32"))
        overwrite: bool = flag("recompute")                      # a bool: --overwrite (store_true)
        slice_by: list[str] = flag("a field (repeatable)", [])    # --slice_by A --slice_by B
        pair: str = flag("the pair's name", positional=True)     # positional: PAIR
        i2b: str | None = flag("optional file", None, positional=True)   # an optional positional: [I2B]

    opts = parse(Options, ["llama2", "--top_k", "50"], prog="src/x.py", description="...")
    # a subcommand of a console command reuses the very same flags:
    make_parser(Options, subparsers.add_parser("x", description="..."))

Field types: str, int, float, Path, each optionally `| None`; bool (a switch); list[X] (repeatable, or a positional of
one or more). The dataclass checks `choices` itself, so the library refuses a wrong value as the command line does.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from .errors import UserError


def flag(help: str, default: Any = dataclasses.MISSING, *, choices: Sequence | None = None, metavar: str | None = None,
         positional: bool = False) -> Any:
    """A dataclass field that is a flag: its help text, default (none: required), choices, metavar, and whether it is
    positional (the reference's positional forms)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "metavar": metavar, "positional": positional}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Flags:
    """Base of the option dataclasses: refuses a value outside a field's choices (the command line's rule, for callers
    of the library; None, an optional flag not given, is allowed), as a one-line `UserError` naming the flag."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices and value is not None:
                raise UserError(f"--{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _kind(annotation) -> tuple[type, bool]:
    """(the value type, whether it is a list) of a field's annotation: `int | None` -> (int, False), list[str] -> (str, True)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _help(text: str, default) -> str:
    """The help text, with the default at its end when it says something (not None, False or [])."""
    if default is dataclasses.MISSING or default is None or default is False or default == []:
        return text
    return f"{text} (default: {default})"


def add_flags(parser: argparse.ArgumentParser, options: type) -> argparse.ArgumentParser:
    """Add the flags of the dataclass `options` to `parser` (a script's, or a console command's subparser)."""
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        kind, many = _kind(hints[f.name])
        default, meta = _default(f), f.metadata
        required = default is dataclasses.MISSING
        kwargs: dict[str, Any] = {"help": _help(meta["help"], default)}
        if kind is not bool and kind is not str:
            kwargs["type"] = kind
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta["positional"]:
            kwargs.setdefault("metavar", f.name.upper())
            if many:
                kwargs["nargs"] = "+" if required else "*"
            elif not required:
                kwargs["nargs"] = "?"
            if not required:
                kwargs["default"] = default
            parser.add_argument(f.name, **kwargs)
        elif kind is bool:
            parser.add_argument(f"--{f.name}", action="store_true", help=kwargs["help"])
        elif many:
            parser.add_argument(f"--{f.name}", action="append", default=[] if required else default, **kwargs)
        else:
            parser.add_argument(f"--{f.name}", required=required, **({} if required else {"default": default}), **kwargs)
    return parser


def make_parser(options: type, parser: argparse.ArgumentParser | None = None, **parser_args) -> argparse.ArgumentParser:
    """A parser of the flags of `options`: `parser` itself with them added, or a new `argparse.ArgumentParser(**parser_args)`
    (prog, description)."""
    return add_flags(parser or argparse.ArgumentParser(**parser_args), options)


def from_args(options: type, args: argparse.Namespace):
    """The dataclass of parsed flags (the namespace may hold more, e.g. a console command's subcommand name)."""
    return options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options)})


def parse(options: type, argv: Sequence[str] | None = None, **parser_args):
    """Parse `argv` (default: the command line) into the dataclass `options`; argparse's usage errors exit with status 2."""
    return from_args(options, make_parser(options, **parser_args).parse_args(argv))
