"""Checks every family applies to what it reads: files, text, numbers.

Inputs are local regular files: never URLs or FFmpeg protocols (``http:``, ``concat:``), never
FIFOs or devices (a read blocks forever). Text is UTF-8, split on ``\\n`` only, and holds no
control characters. Numbers are numbers (a string of digits is not a vector) and finite. Each
check raises ``RejectedInput`` with the reason, so the one bad row is rejected and the job goes on.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from motionfleet.core.errors import RejectedInput

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # "http:", "concat:", "file:"
# Control characters but tab (Unicode Cc), line and paragraph separators (Zl, Zp), lone surrogates (Cs)
_NOT_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


# ----------------------------------------------------------------------------- files


def local_file(path: str | os.PathLike, what: str) -> Path:
    """The absolute path of a local regular file, or RejectedInput: no URL or protocol, nothing
    that is not a regular file (directory, FIFO, socket, device)."""
    text = file_path_text(path, what)
    try:
        mode = os.stat(text).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise RejectedInput(f"{what} {printable(text)} does not exist") from None
    except OSError as err:
        raise RejectedInput(f"{what} {printable(text)} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise RejectedInput(f"{what} {printable(text)} is not a regular file")
    return Path(os.path.abspath(text))


def file_path_text(path: str | os.PathLike, what: str) -> str:
    """``path`` as text, or RejectedInput for an empty one, a URL or a protocol."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise RejectedInput(f"{what} must be a file path, got {type(path).__name__}")
    if _SCHEME.match(text) and not Path(text).exists():
        raise RejectedInput(f"{what} {printable(text)!r} is a URL or protocol; inputs are local files")
    return text


def file_inside(folder: str | os.PathLike, path: str | os.PathLike, what: str) -> Path:
    """``local_file`` of ``path`` taken relative to ``folder``, whose real path (``..`` and every
    symlink followed) lies inside ``folder``'s: a path read from a file never leads out of that
    file's folder (``/etc/passwd``, ``../x.obj``, a link to a system file)."""
    text = file_path_text(path, what)
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, text))
    if os.path.commonpath([base, target]) != base:
        raise RejectedInput(f"{what} {printable(text)!r} leads outside {printable(base)}, the folder of the file that "
                            f"names it; give a path inside that folder")
    return local_file(target, what)


def open_media(path: str | os.PathLike, what: str, **options: Any):
    """An ``av`` container of a local regular file. FFmpeg reads it through its ``file`` protocol
    only (an absolute ``file:`` URL and ``protocol_whitelist=file``), so neither the path nor a
    playlist inside the file can make it open a URL, a device or another protocol."""
    import av

    file = local_file(path, what)
    return av.open(f"file:{file}", options={"protocol_whitelist": "file"}, **options)


# ----------------------------------------------------------------------------- text


def printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable file names, JSON ``\\ud800``) escaped, so it can be
    written as UTF-8 (a Parquet string) and still says what it was."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def text_lines(data: bytes, what: str) -> list[bytes]:
    """A text file's lines, split on ``\\n`` only (``\\r\\n`` too): ``str.splitlines`` also splits on
    form feeds, ``\\x1c``-``\\x1e``, ``\\x85`` and U+2028, which moves every later line's id. A file
    with NUL bytes is binary and refused whole (ValueError: the user gave the wrong file)."""
    if b"\x00" in data:
        raise ValueError(f"{what} is binary (it holds NUL bytes), not UTF-8 text")
    if data.endswith(b"\n"):
        data = data[:-1]
    return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")] if data else []


def decode_line(line: bytes, what: str) -> str:
    """One line as text, or RejectedInput if it is not UTF-8 (a binary file is not text)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RejectedInput(f"{what} is not UTF-8 text (byte {err.start}: {line[err.start:err.start + 1]!r})") from None


def check_text(value: Any, what: str) -> str:
    """``value`` if it is a string of valid Unicode (no lone surrogates) without control characters
    or line breaks other than tabs, else RejectedInput."""
    if not isinstance(value, str):
        raise RejectedInput(f"{what} must be a string, got {type(value).__name__}")
    bad = _NOT_TEXT.search(value)
    if bad is None:
        return value
    char, at = bad.group(), bad.start()
    if unicodedata.category(char) == "Cs":
        raise RejectedInput(f"{what} holds a lone surrogate ({printable(char)} at {at}), not valid Unicode")
    raise RejectedInput(f"{what} holds a control character or line break (U+{ord(char):04X} at {at})")


def check_id(value: Any, what: str = "id") -> str:
    """An item id as text: a string (checked as ``check_text``) or an integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RejectedInput(f"{what} must be a string or an integer, got {type(value).__name__}")
    return check_text(str(value), what)


# ----------------------------------------------------------------------------- numbers


def number_list(value: Any, what: str) -> list[float]:
    """The numbers of a list (Parquet list / numpy array), or RejectedInput: a string, a mapping or
    booleans are not a vector (``"000"`` is not (0, 0, 0))."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise RejectedInput(f"{what} must be a list of numbers, got {type(value).__name__}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        bad = next(v for v in value if not isinstance(v, (int, float)) or isinstance(v, bool))
        raise RejectedInput(f"{what} must be a list of numbers, got an element of type {type(bad).__name__}")
    return [float(v) for v in value]


def non_finite_rows(rows) -> list[int]:
    """Indices of the rows (an array's first axis, or a list of arrays) that hold NaN or infinity
    as float32, the precision results are stored in."""
    return [i for i, row in enumerate(rows) if not _finite_as_float32(row)]


def _finite_as_float32(values) -> bool:
    with np.errstate(over="ignore"):  # what overflows float32 is not finite in the result either
        array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
    return bool(np.isfinite(array).all())
