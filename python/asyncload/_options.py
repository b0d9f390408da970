"""The loader's options, taken from the C library's one table (options.def).

Owns the Python side of every option: the list (``OPTIONS``, read once from
``asyncload_option_info``: name, type, default, min, max, doc), the checks of
Loader()'s arguments with messages naming the option and its limit, the
filling of ``struct asyncload_options``, and reading the options of a running
loader back. A new C option appears here, with its checks and default, without
a Python edit.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ._lowlevel import encode_path, ffi, lib
from ._state import int_arg

__all__ = ["OptionInfo", "OPTIONS", "REQUIRED", "make_options", "read_options", "signature",
           "describe"]

UINT: int = lib.ASYNCLOAD_OPTION_UINT
BOOL: int = lib.ASYNCLOAD_OPTION_BOOL
STRING: int = lib.ASYNCLOAD_OPTION_STRING


class OptionInfo(NamedTuple):
    """One row of the C option table."""

    name: str
    type: int  # UINT, BOOL or STRING
    default: Any  # int, bool, a choice's name, or None for a string
    min: int
    max: int
    doc: str
    choices: Optional[Tuple[str, ...]]  # names of the values min..max, if named


def _read_table() -> Tuple[OptionInfo, ...]:
    info = ffi.new("struct asyncload_option_info *")
    rows = []
    i = 0
    while lib.asyncload_option_info(i, info) == 0:
        kind = int(info.type)
        # `def` is a Python keyword, hence getattr
        raw_def = int(getattr(info, "def"))
        lo = int(info.min)
        choices = (None if info.choices == ffi.NULL
                   else tuple(ffi.string(info.choices).decode("ascii").split()))
        default: Any = None if kind == STRING else (bool(raw_def) if kind == BOOL else raw_def)
        if choices:
            default = choices[raw_def - lo]
        rows.append(OptionInfo(ffi.string(info.name).decode("ascii"), kind, default,
                               lo, int(info.max), ffi.string(info.doc).decode("utf-8"),
                               choices))
        i += 1
    return tuple(rows)


OPTIONS: Tuple[OptionInfo, ...] = _read_table()
_BY_NAME: Dict[str, OptionInfo] = {o.name: o for o in OPTIONS}
# Loader(queue_depth, max_file_size, n_workers, ...) as documented: these three
# have no sensible default for a caller who sizes shared memory.
REQUIRED: Tuple[str, ...] = ("queue_depth", "max_file_size", "n_workers")


def _check(o: OptionInfo, value: Any, keep: List[Any]) -> Any:
    """``value`` checked against ``o`` and converted for the C struct."""
    if o.type == STRING:
        if value is None:
            return ffi.NULL
        raw = encode_path(value)
        if len(raw) >= lib.ASYNCLOAD_PATH_MAX:
            raise ValueError(f"{o.name} is too long ({len(raw)} bytes, "
                             f"at most {int(lib.ASYNCLOAD_PATH_MAX) - 1})")
        c = ffi.new("char[]", raw)
        keep.append(c)  # the C struct only points at it
        return c
    if o.choices and isinstance(value, str):
        if value not in o.choices:
            raise ValueError(f"{o.name} must be one of {', '.join(map(repr, o.choices))} "
                             f"(got {value!r})")
        return o.min + o.choices.index(value)
    if o.type == BOOL:
        if not isinstance(value, (bool, int)):
            raise TypeError(f"{o.name} must be a bool, not {type(value).__name__}")
        return bool(value)
    return int_arg(o.name, value, o.max, o.min)


def make_options(args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[Any, List[Any]]:
    """A ``struct asyncload_options *`` from Loader()'s arguments, checked.

    Positional arguments follow the table's order. Returns the struct and
    the objects it points into (keep them alive while it is used).
    """
    if len(args) > len(OPTIONS):
        raise TypeError(f"Loader() takes at most {len(OPTIONS)} positional arguments "
                        f"({len(args)} given)")
    values = {o.name: v for o, v in zip(OPTIONS, args)}
    for name, v in kwargs.items():
        if name not in _BY_NAME:
            raise TypeError(f"Loader() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"Loader() got multiple values for argument {name!r}")
        values[name] = v
    missing = [n for n in REQUIRED if n not in values]
    if missing:
        raise TypeError(f"Loader() missing required argument(s): {', '.join(missing)}")
    opts = ffi.new("struct asyncload_options *")
    lib.asyncload_options_init(opts)
    keep: List[Any] = []
    for o in OPTIONS:
        if o.name in values:
            setattr(opts, o.name, _check(o, values[o.name], keep))
    # The one limit across options (also checked in options.c).
    if opts.n_workers * opts.queue_depth > lib.ASYNCLOAD_MAX_ENTRIES:
        raise ValueError(
            f"n_workers * queue_depth is too large ({opts.n_workers} * {opts.queue_depth}, "
            f"at most {int(lib.ASYNCLOAD_MAX_ENTRIES)} entries)")
    return opts, keep


def read_options(opts: Any) -> Dict[str, Any]:
    """The options in a filled ``struct asyncload_options``, as Python values."""
    out: Dict[str, Any] = {}
    for o in OPTIONS:
        v = getattr(opts, o.name)
        if o.type == STRING:
            out[o.name] = None if v == ffi.NULL else ffi.string(v).decode(
                "utf-8", "surrogateescape")
        elif o.type == BOOL:
            out[o.name] = bool(v)
        elif o.choices and o.min <= v <= o.max:
            out[o.name] = o.choices[v - o.min]
        else:
            out[o.name] = int(v)
    return out


def signature() -> inspect.Signature:
    """Loader()'s signature as help() and IDEs show it, built from the table."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for o in OPTIONS:
        default = inspect.Parameter.empty if o.name in REQUIRED else o.default
        params.append(inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=default))
    return inspect.Signature(params)


def describe() -> str:
    """The option list for Loader's docstring."""
    lines = []
    for o in OPTIONS:
        where = "required" if o.name in REQUIRED else f"default {o.default!r}"
        named = f" [{' | '.join(o.choices)}]" if o.choices else ""
        lines.append(f"    {o.name} ({where}){named}: {o.doc}")
    return "\n".join(lines)
