"""Settings as one contract for the command line and the Python API.

An ``Option`` is one setting: its keyword (``guidance_scale``), hence its flag
(``--guidance-scale``), its default, a help line and its checks. The CLI builds its parsers from
options and the API checks keyword arguments against the same options, so a value is refused
with the same one-line message (``UsageError``) before any work starts, wherever it comes from.

A family writes each of its settings once, on a field of its settings dataclasses
(``steps: int = setting(50, "DDIM steps", low=1, high=1000)``): ``options_of`` derives its
options from those fields, ``settings_from`` its dataclasses from the checked values, and
``output_settings`` the job's description from them (``scheduling`` fields left out).
"""

from __future__ import annotations

import builtins
import math
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence


class UsageError(ValueError):
    """A setting the user gave that cannot work; the message names it and the fix (exit 2)."""


Check = Callable[[Any], Optional[str]]  # returns what is wrong with a value, or None


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    choices: Optional[Sequence[str]] = None
    checks: tuple[Check, ...] = ()
    switch: bool = False  # a flag without a value (store_true)
    metavar: Optional[str] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, given: Any) -> Any:
        """``given`` parsed and checked, or the default when it is None."""
        return self.default if given is None else self.parse(given)

    def parse(self, value: Any) -> Any:
        """The value converted to the option's type and checked, or UsageError naming the flag."""
        if value is None or (self.switch and isinstance(value, bool)):
            return value
        value = self._convert(value)
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{self.flag}: unknown value {value!r}; choose one of {', '.join(map(str, self.choices))}")
        for check in self.checks:
            problem = check(value)
            if problem:
                raise UsageError(f"{self.flag}: {problem}")
        return value


    def _convert(self, value: Any) -> Any:
        wrong = UsageError(f"{self.flag}: {value!r} is not {_kind(self.type)}")
        if isinstance(value, str):
            try:
                return self.type(value)
            except (TypeError, ValueError):
                raise wrong from None
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise wrong
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong
            return float(value)
        return value


def _kind(kind: Callable) -> str:
    """What a value of ``kind`` is, in words: a parser may say it in its ``kind`` attribute."""
    named = {int: "an integer", float: "a number", workers_count: "auto or a whole number"}
    return named.get(kind) or getattr(kind, "kind", None) or f"a valid {getattr(kind, '__name__', 'value')}"


# --- checks ------------------------------------------------------------------------------------


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low}, got {v}"


def at_most(high: float) -> Check:
    return lambda v: None if v <= high else f"must be <= {high}, got {v}"


def finite(v: float) -> Optional[str]:
    return None if math.isfinite(v) else f"must be a finite number, got {v}"


def positive(v: float) -> Optional[str]:
    return None if v > 0 else f"must be > 0, got {v}"


def existing_file(v: str) -> Optional[str]:
    return None if Path(v).is_file() else f"{v} is not a file (check the path)"


def existing_path(v: str) -> Optional[str]:
    return None if Path(v).exists() else f"{v} does not exist (check the path)"


def existing_folder(v: str) -> Optional[str]:
    return None if Path(v).is_dir() else f"{v} is not a folder (check the path)"


def int_option(name: str, default: Optional[int], help: str, low: Optional[float] = None,
               high: Optional[float] = None) -> Option:
    checks = tuple(c for c in (at_least(low) if low is not None else None,
                               at_most(high) if high is not None else None) if c)
    return Option(name, default, help, int, checks=checks, metavar="N")


MAX_SEED = 2**63 - 1  # seeds are written to the results' int64 columns (torch's generators take up to 2**64 - 1)


def dummy_seed_option() -> Option:
    return int_option("dummy_seed", 0, "seed of the dummy weights", low=0, high=MAX_SEED)


def workers_count(value: str) -> int | str:
    """``--workers``'s text: ``auto`` or a whole number."""
    return "auto" if value == "auto" else int(value)


def workers_option(name: str, help: str) -> Option:
    """A count of workers, or ``auto`` (the default): ``execution.layout`` decides from the machine."""
    def check(v) -> Optional[str]:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return None
        return f"must be >= 0, got {v}" if isinstance(v, int) and not isinstance(v, bool) else f"must be auto or a whole number, got {v!r}"

    return Option(name, "auto", help, workers_count, checks=(check,), metavar="N|auto")


def float_option(name: str, default: Optional[float], help: str, low: Optional[float] = None,
                 high: Optional[float] = None, above: Optional[float] = None) -> Option:
    checks: list[Callable[[Any], Optional[str]]] = [finite]
    if low is not None:
        checks.append(at_least(low))
    if above is not None:
        checks.append(lambda v: None if v > above else f"must be > {above}, got {v}")
    if high is not None:
        checks.append(at_most(high))
    return Option(name, default, help, float, checks=tuple(checks), metavar="X")


def file_option(name: str, help: str, must_exist: Check = existing_path) -> Option:
    return Option(name, None, help, str, checks=(must_exist,), metavar="PATH")


def scheduling(default: Any) -> Any:
    """A settings dataclass field that decides how the work is scheduled (batch size, prefetch
    depth), never a row's bytes: the job's description, and so its fingerprint, leaves it out."""
    return field(default=default, metadata={"scheduling": True})


def output_settings(settings: Any) -> dict:
    """A settings dataclass as the job's description records it: every field but ``scheduling`` ones."""
    left_out = {f.name for f in fields(settings) if f.metadata.get("scheduling")}
    return {name: value for name, value in asdict(settings).items() if name not in left_out}


# --- settings declared on their dataclass field --------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a field written with ``setting`` declares: its option, whose name is the public flag's
    where that differs from the field's (``--fps`` sets ``target_fps``), else empty; ``inverted``: a
    switch that turns its field off (``--unfolded`` sets ``folded`` False)."""

    option: Option
    inverted: bool = False

    def option_for(self, field_name: str) -> Option:
        return self.option if self.option.name else replace(self.option, name=field_name)


_FIELD_DEFAULT = object()  # ``flag_default`` not given: the flag's default is the field's


def setting(default: Any, help: str, *, flag: Optional[str] = None, type: Optional[Callable[[str], Any]] = None,
            choices: Optional[Sequence[Any]] = None, low: Optional[float] = None, high: Optional[float] = None,
            above: Optional[float] = None, checks: Sequence[Check] = (), metavar: Optional[str] = None,
            flag_default: Any = _FIELD_DEFAULT, inverted: bool = False, scheduling: bool = False) -> Any:
    """A settings dataclass field that is also a flag of its job command and a keyword of the API,
    written once: ``--<field name>`` (or ``--<flag>``), its ``default``, its ``help`` and its checks.

    ``type`` parses the flag's text (default: the default's type): an ``int`` takes ``low`` / ``high``
    and a ``float`` ``low`` / ``above`` / ``high`` and must be finite, as ``int_option`` and
    ``float_option``; a ``bool`` is a switch (``inverted``: the switch sets the field False).
    ``checks`` come after those. ``flag_default``: the flag's default where it is not the field's
    (None: unset, e.g. a value a preset fills). ``scheduling``: as ``scheduling``, out of the job's
    description.
    """
    kind: Callable[[str], Any] = type or builtins.type(default)
    given = (not default if inverted else default) if flag_default is _FIELD_DEFAULT else flag_default
    not_taken = (above,) if kind is int else () if kind is float else (low, high, above)
    if any(bound is not None for bound in not_taken):
        raise TypeError(f"a {getattr(kind, '__name__', kind)} setting takes no such bound (int: low, high; float: low, above, high)")
    if kind is bool:
        option = Option(flag or "", given, help, switch=True)
    elif kind is int:
        option = int_option(flag or "", given, help, low, high)
    elif kind is float:
        option = float_option(flag or "", given, help, low, high, above)
    else:
        option = Option(flag or "", given, help, kind)
    option = replace(option, choices=choices, checks=option.checks + tuple(checks), metavar=metavar or option.metavar)
    return field(default=default, metadata={"setting": Setting(option, inverted), "scheduling": scheduling})


def file_setting(help: str, must_exist: Check = existing_path, flag: Optional[str] = None) -> Any:
    """A path setting, none by default, as ``file_option``."""
    return setting(None, help, flag=flag, type=str, checks=(must_exist,), metavar="PATH")


def options_of(*classes: type, order: Sequence[str] = ()) -> tuple[Option, ...]:
    """The options the fields of ``classes`` declare (``setting``), in field order but for the flags
    ``order`` names, which come first in its order (the order ``--help`` lists them in)."""
    options = [s.option_for(f.name) for cls in classes for f in fields(cls) if (s := f.metadata.get("setting"))]
    by_name = {o.name: o for o in options}
    if len(by_name) < len(options):
        raise ValueError(f"two fields of {', '.join(c.__name__ for c in classes)} declare the same flag")
    unknown = [name for name in order if name not in by_name]
    if unknown:
        raise ValueError(f"order names {', '.join(unknown)}, which no field of {', '.join(c.__name__ for c in classes)} declares")
    return tuple(by_name[name] for name in order) + tuple(o for o in options if o.name not in order)


def field_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` given in ``values`` (the checked values of a job's options): a declared
    setting under its flag's name (negated where ``inverted``), any other field under its own (the
    engine's options: ``checkpoint``, ``batch_size``, ...). A field given None is left out, to take
    its default; a list for a tuple field (from JSON or the API) becomes a tuple."""
    given = {}
    for f in fields(cls):
        declared = f.metadata.get("setting")
        value = values.get(declared.option_for(f.name).name if declared else f.name)
        if value is None:
            continue
        if declared and declared.inverted:
            value = not value
        given[f.name] = tuple(value) if isinstance(f.default, tuple) and isinstance(value, list) else value
    return given


def settings_from(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` built from the checked values of a job's options (``field_values``)."""
    return cls(**field_values(cls, values))


def build_from(spec: type, settings: type) -> Callable[[Mapping[str, Any]], tuple[Any, Any]]:
    """A family's ``build`` (``registry.Family``): the checked values -> (its spec, its settings)."""
    return partial(_build, spec, settings)


def _build(spec: type, settings: type, values: Mapping[str, Any]) -> tuple[Any, Any]:
    return settings_from(spec, values), settings_from(settings, values)
