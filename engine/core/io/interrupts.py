"""SIGTERM stops a job the way Ctrl-C does.

Kubernetes, Slurm (``scancel``, the end of a time limit) and ``ray job stop`` send SIGTERM, then
SIGKILL after a grace period. Python's default for SIGTERM is to die at once: no ``finally`` runs,
so the job's lease stays in the folder and the embedded Ray cluster is left to the reaper. Within
``sigterm_interrupts`` the first SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``) in the
main thread instead, so it takes every path Ctrl-C takes (the attempt in flight is abandoned, the
lease released, Ray shut down); a second SIGTERM during that cleanup is ignored rather than cutting
it short.

``ray.init`` replaces the SIGTERM handler with its own (``sys.exit(15)``, and absl's in C), so
``cluster.connect`` calls ``reclaim`` after it; the handler it replaced is what the block restores
at its end.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_replaced: list = []  # while a block holds SIGTERM: the handler it restores at the end
_received: list[int] = []  # the SIGTERM the block turned into ``Terminated``, if one came


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM; raised like Ctrl-C's KeyboardInterrupt."""


def _interrupt(signum, frame) -> None:
    if _received:
        return  # the stop is already under way: let its cleanup finish
    _received.append(signum)
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_interrupts():
    """Within this block SIGTERM raises ``Terminated`` in the main thread. Only where nobody else
    handles SIGTERM (the default action) and in the main thread (Python runs handlers only there);
    a nested block leaves the outer one in charge."""
    if _replaced or not _main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    _received.clear()
    _replaced.append(signal.signal(signal.SIGTERM, _interrupt))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _replaced.pop())


def reclaim() -> None:
    """Hold SIGTERM again after a library installed its own handler within the block: a Python one
    (``ray.init``'s ``sys.exit(15)``), restored when the block ends, or a C one Python does not see.
    Ray's core worker installs absl's failure handler even when ``ray.init`` runs in another thread:
    it prints a stack, calls Python's, and arms a 3 s SIGALRM that aborts the process (exit -6) if
    the stop's cleanup is still running, as it is on a loaded machine. ``signal.signal`` sets the C
    handler back whatever Python's view is."""
    if not (_replaced and _main_thread()):
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    if before is not _interrupt:
        _replaced[-1] = before


def terminated() -> bool:
    """Whether the last ``sigterm_interrupts`` block was stopped by SIGTERM (not Ctrl-C)."""
    return bool(_received)
