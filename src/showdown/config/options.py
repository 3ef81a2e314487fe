"""One declarative definition per option, and everything derived from it.

A configuration field is declared once, with `option(default, help, group=..., min=..., max=..., choices=...)`.
From that one definition come the command-line flag (`add_flags`: name, type, metavar, help with the real default),
the reading of YAML files and presets (`read_values`: known keys, values of the right type), the keyword arguments
of `showdown.run` (`from_keywords`) and the checks of `validate` (`check_field`: type, choices, range), each
failure one line that names the flag and what to write.

Long because every reading of an option (flags, YAML, keywords, checks) derives from the same declaration, and
keeping them side by side is what keeps their names, conversions and messages the same.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path

from showdown.errors import ConfigError


@dataclass(frozen=True)
class Option:
    help: str
    group: str
    flag: str | None = None  # default: --name-with-dashes (--no-name for a flag that turns a default True off)
    min: float | None = None  # inclusive bounds; for a list of numbers they hold for every item
    max: float | None = None
    above: float | None = None  # exclusive lower bound
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    unset: str | None = None  # what None means, shown in --help as the default
    must: str | None = None  # the rule in words, where the bounds alone would not say what to write
    hint: str | None = None  # appended to a range error
    path: str | None = None  # "dir" or "file": when it exists it must be that kind of thing


def option(default, help: str, *, group: str, **spec) -> Field:
    """A dataclass field carrying its Option; mutable defaults are copied for every instance."""
    metadata = {"option": Option(help=help, group=group, **spec)}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Kind:
    """A field's annotated type, reduced to what conversion needs."""
    base: type  # bool, int, float, str, list, tuple or dict
    item: type | None = None  # element type of a list or tuple
    optional: bool = False

    def describe(self) -> str:
        if self.base is dict:
            return "a mapping of model name to weights file"
        if self.base in (list, tuple):
            return f"a list of {_NOUNS[self.item][1]}"
        return _NOUNS[self.base][0]


_NOUNS = {bool: ("true or false", "true/false values"), int: ("a whole number", "whole numbers"),
          float: ("a number", "numbers"), str: ("text", "names")}


def _kind(annotation) -> Kind:
    optional = False
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(rest) < len(typing.get_args(annotation)), rest[0]
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    return Kind(origin, args[0] if origin in (list, tuple) else None, optional)


@functools.cache
def definitions(cls) -> dict[str, tuple[Field, Option, Kind]]:
    """Every option of a config dataclass by field name, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, f.metadata["option"], _kind(hints[f.name])) for f in fields(cls) if "option" in f.metadata}


def default_of(f: Field):
    return f.default_factory() if f.default is MISSING else f.default


def flag_of(name: str, f: Field, opt: Option) -> str:
    if opt.flag:
        return opt.flag
    prefix = "--no-" if default_of(f) is True else "--"
    return prefix + name.replace("_", "-")


# --- conversion: YAML values and command-line text to the declared type -------------------------------------

def convert(value, kind: Kind):
    """`value` as the declared type; ValueError with the rule in words ("must be a number (got 'x')")."""
    if value is None:
        if kind.optional:
            return None
        raise ValueError(f"must be {kind.describe()} (got nothing)")
    if kind.base is dict:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        raise ValueError(f"must be {kind.describe()} (got {_short(value)})")
    if kind.base in (list, tuple):
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]  # one number where a list of numbers belongs
        try:
            items = [_scalar(part, kind.item) for part in parts]
        except ValueError:
            raise ValueError(f"must be {kind.describe()}, comma-separated (got {_short(value)})") from None
        return kind.base(items)
    try:
        return _scalar(value, kind.base)
    except ValueError:
        raise ValueError(f"must be {kind.describe()} (got {_short(value)})") from None


def _scalar(value, kind: type):
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool):
        pass  # true/false is not a number or a name
    elif kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind is float:
        if isinstance(value, (int, float, str)):
            number = float(value)  # also YAML's `1e-3`, which YAML 1.1 reads as a string
            if math.isfinite(number):
                return number
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return str(value)  # `name: 2024`
    raise ValueError(value)


def read_values(cls, values, source: str | None = None) -> dict:
    """A mapping from a YAML file, a preset or Python, checked against the options: known keys only, each value
    converted to its declared type. Range checks are `validate`'s, after everything is merged."""
    where = f" in {source}" if source else ""
    if not isinstance(values, dict):
        raise ConfigError(f"{source or 'a configuration'} must be a mapping of option names to values, such as "
                          f"`lr: 0.01` (got {type(values).__name__} {_short(values)})")
    known, names = definitions(cls), keyword_fields(cls)  # a key is the field's name or the flag's (`strategy`)
    unknown = sorted(str(key) for key in values if key not in names)
    if unknown:
        close = [match for key in unknown for match in difflib.get_close_matches(str(key), names, n=1)]
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}{where}"
                          + (f" (did you mean {', '.join(close)}?)" if close else "")
                          + "; the keys are the flags of `showdown run --help` with _ for -")
    out, given = {}, {}
    for key, value in values.items():
        name = names[key]
        if name in given:
            raise ConfigError(f"config keys {given[name]} and {key}{where} set the same option; keep one")
        given[name] = key
        try:
            out[name] = convert(value, known[name][2])
        except ValueError as exc:
            raise ConfigError(f"config key '{key}'{where} {exc}") from None
    return out


def keyword_fields(cls) -> dict[str, str]:
    """Keyword argument -> field: the field's name, and the flag's name with _ for - (`strategy` for
    --strategy); a --no-... flag's keyword is the field (`report=False`)."""
    names = {}
    for name, (f, opt, _) in definitions(cls).items():
        names[name] = name
        flag = flag_of(name, f, opt)
        if not flag.startswith("--no-"):
            names[flag[2:].replace("-", "_")] = name
    return names


def from_keywords(cls, keywords: dict, base=None):
    """A config from Python keyword arguments (the notebook API), or `base` with them replaced: unknown names are
    one-line ConfigErrors with a suggestion; values are checked by `validate`, as the flags are."""
    names = keyword_fields(cls)
    unknown = sorted(key for key in keywords if key not in names)
    if unknown:
        close = [match for key in unknown for match in difflib.get_close_matches(key, names, n=1)]
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}"
                          + (f" (did you mean {', '.join(close)}?)" if close else "")
                          + "; the keywords are the flags of `showdown run --help` with _ for -")
    values = {names[key]: value for key, value in keywords.items()}
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- validation: the declared choices and ranges ------------------------------------------------------------

def check_field(config, name: str):
    """The field's value, converted to its type and checked; ConfigError naming the flag and the rule."""
    f, opt, kind = definitions(type(config))[name]
    label = name if kind.base is bool else flag_of(name, f, opt)
    try:
        value = convert(getattr(config, name), kind)
    except ValueError as exc:
        raise ConfigError(f"{label} {exc}") from None
    if value is None:
        return value
    for item in value if kind.base in (list, tuple) and opt.choices else [value]:
        if opt.choices and item not in opt.choices:
            raise ConfigError(f"{label} must be one of {', '.join(opt.choices)} (got '{item}')")
    for number in value if kind.base in (list, tuple) else [value]:
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not _in_range(number, opt):
            what = f"{label} values" if kind.base in (list, tuple) else label
            raise ConfigError(f"{what} must be {opt.must or _rule(opt)} (got {_fmt(number)})"
                              + (f"; {opt.hint}" if opt.hint else ""))
    if opt.path:
        _check_path(label, Path(value), opt.path)
    return value


def _in_range(number: float, opt: Option) -> bool:
    return ((opt.min is None or number >= opt.min) and (opt.max is None or number <= opt.max)
            and (opt.above is None or number > opt.above))


def _rule(opt: Option) -> str:
    if opt.min is not None and opt.max is not None:
        return f"between {_fmt(opt.min)} and {_fmt(opt.max)}"
    if opt.above is not None:
        low = "positive" if opt.above == 0 else f"above {_fmt(opt.above)}"
        return low + (f" and at most {_fmt(opt.max)}" if opt.max is not None else "")
    if opt.min is not None:
        return f"at least {_fmt(opt.min)}"
    return f"at most {_fmt(opt.max)}"


def _check_path(label: str, path: Path, kind: str) -> None:
    """A folder to create or a file to write: neither it nor a parent may exist as the wrong kind of thing."""
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise ConfigError(f"{label} {path} is an existing file; name a folder (new or existing) instead")
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{label} {path} is a folder; name a file (new or existing) instead")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{label} {path}: {parent} is a file, so nothing can be created under it")
            return


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- the command line ---------------------------------------------------------------------------------------

def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per option, grouped as declared. A flag not given leaves the value of the config file or preset
    (argparse.SUPPRESS); `--help` shows each option's real default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (f, opt, kind) in definitions(cls).items():
        group = groups.get(opt.group) or groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        flag, default = flag_of(name, f, opt), default_of(f)
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=_help(opt, default))
        if kind.base is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
        elif kind.base is dict:  # --weights FILE, repeatable; the CLI maps [MODEL=]FILE entries to models
            kwargs.update(action="append", metavar=opt.metavar)
        else:
            kwargs.update(type=_parse(kind), metavar=opt.metavar or _metavar(opt, kind))
        group.add_argument(flag, **kwargs)


def flag_type(annotation, **spec):
    """An argparse `type` for a flag declared outside a config dataclass (`showdown predict`, `bench`): the same
    conversion and, with `min=`, `max=` or `choices=`, the same checks and one-line messages as the options."""
    return _parse(_kind(annotation), Option(help="", group="", **spec))


def _parse(kind: Kind, opt: Option | None = None):
    def parse(text: str):
        try:
            value = convert(text, kind)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        for item in (value if kind.base in (list, tuple) else [value]) if opt else []:
            if opt.choices and item not in opt.choices:
                raise argparse.ArgumentTypeError(f"must be one of {', '.join(opt.choices)} (got '{item}')")
            if isinstance(item, (int, float)) and not _in_range(item, opt):
                raise argparse.ArgumentTypeError(f"must be {_rule(opt)} (got {_fmt(item)})")
        return value
    parse.__name__ = kind.describe()
    return parse


def _metavar(opt: Option, kind: Kind) -> str | None:
    if opt.choices:
        return "{" + ",".join(opt.choices) + "}"
    return {int: "N", float: "X"}.get(kind.base)  # None: argparse's, the upper-case name


def _help(opt: Option, default) -> str:
    """The help text, then the accepted range and the real default: `(between 0 and 1; default: 0.2)`."""
    notes = [_rule(opt)] if not opt.must and (opt.min, opt.max, opt.above) != (None, None, None) else []
    shown = _shown(default, opt)
    if shown:
        notes.append(f"default: {shown}")
    text = f"{opt.help} ({'; '.join(notes)})" if notes else opt.help
    return text.replace("%", "%%")


def _shown(default, opt: Option) -> str | None:
    if default is None:
        return opt.unset
    if isinstance(default, bool) or isinstance(default, dict):
        return None
    if isinstance(default, (list, tuple)):
        return ",".join(map(_fmt, default)) or "none"
    return _fmt(default)
