"""Settings as one contract for the command line and the Python API.

An ``Option`` is one setting: its keyword (``guidance_scale``), hence its flag
(``--guidance-scale``), its default, a help line and its checks. The CLI builds its parsers from
options and the API checks keyword arguments against the same options, so a value is refused
with the same one-line message (``UsageError``) before any work starts, wherever it comes from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


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


def int_option(name: str, default: Optional[int], help: str, low: Optional[int] = None,
               high: Optional[int] = None) -> Option:
    checks = tuple(c for c in (at_least(low) if low is not None else None,
                               at_most(high) if high is not None else None) if c)
    return Option(name, default, help, int, checks=checks, metavar="N")


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
