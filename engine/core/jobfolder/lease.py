"""One job per folder at a time: a lease with a heartbeat and an expiry, on any filesystem.

Object stores offer no exclusive create through pyarrow, so the lease needs only whole-object
PUT, LIST and DELETE with read-after-write consistency (S3, GCS, local disks): a contender writes
``_lock/<token>.json`` (owner, host, pid, expiry), then lists ``_lock/`` and holds the folder only
if no other live lease is there; otherwise it deletes its own and is refused. Two contenders
cannot both win: each would have listed before the other's write, and each wrote before it listed.
(Both may lose in an exact tie; both are then refused and may simply retry.)

A lease is live until its expiry (renewed every ``ttl / 3`` by a heartbeat thread), and a lease
of a process on this host that no longer exists is dead at once, so a crashed job never leaves the
folder stuck for longer than ``ttl`` (and not at all on the same machine). Hosts' clocks must agree
to well within ``ttl / 2``. ``ttl`` is 60 s, or ``MOTIONFLEET_LEASE_S`` seconds where that is set
(an operator whose storage or stalls need longer; tests that stall a driver past it).

The holder counts its lease as held only without a gap: ``confirmed_until`` is ``ttl / 2`` after
it began its last write of the lease (this process's monotonic clock, which runs on while the
process is stopped), and a renewal keeps the lease only if its write returned before then, while
the lease file (named by the holder's token) is still there. Once a renewal or a commit finds the
confirmation passed, the lease is lost for good, even if nobody took the folder meanwhile: a driver
stalled past it (SIGSTOP, a swapped-out VM, a storage call that hung) may have been judged expired
by a contender, which then removed the lease and took the folder; rewriting it then could make two
holders. While the lease is held without a gap, another live lease in ``_lock/`` can only be a
contender that will withdraw (it lists ours), so the holder ignores it. ``JobFolder.commit`` checks
the lease before writing a commit record and again after it (removing the record if the lease was
lost while it was written), so a resumed driver stops with ``LeaseLost`` before committing more.

Every ``_lock/*.json`` is read as untrusted: a lease is a JSON object with ``owner`` and ``host``
(strings), ``pid`` (an integer) and ``expires`` (a number, epoch seconds). Anything else (a hand-
edited ``{}``, an expiry written as a string, bytes that are not JSON) is neither trusted nor
removed: acquiring the lease stops with ``DamagedFile``, one line naming the file.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time

from motionfleet.core.jobfolder.storage import Storage, new_token
from motionfleet.core.options import UsageError

LOCK_DIR = "_lock"
DEFAULT_TTL_S = 60.0
TTL_VARIABLE = "MOTIONFLEET_LEASE_S"
# What each field of a lease must be: (types, as said in an error).
LEASE_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {"owner": (str, "a string"), "host": (str, "a string"), "pid": (int, "an integer"),
                "expires": ((int, float), "a number")}
MAX_EPOCH_S = 1e11  # year 5138: beyond it (or NaN) an expiry is not a time ``time.localtime`` can show


class FolderRefused(RuntimeError):
    """The output folder cannot take this job now (the message says why and what to do)."""


class FolderInUse(FolderRefused):
    """Another live job holds the folder."""


class LeaseLost(FolderRefused):
    """This job's lease expired or was taken over: it must stop committing."""


def lease_ttl_s() -> float:
    """The lease's validity in seconds: ``MOTIONFLEET_LEASE_S``, else ``DEFAULT_TTL_S``."""
    value = os.environ.get(TTL_VARIABLE, "").strip()
    if not value:
        return DEFAULT_TTL_S
    try:
        ttl = float(value)
    except ValueError:
        ttl = math.nan
    if not 1 <= ttl <= 86400:  # NaN fails too
        raise UsageError(f"{TTL_VARIABLE}={value!r:.40} is not a lease time: give seconds from 1 to 86400 (default "
                         f"{DEFAULT_TTL_S:g}), or unset it")
    return ttl


def _alive_here(lease: dict) -> bool:
    if lease.get("host") != socket.gethostname():
        return True  # another machine: trust the expiry
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_problem(lease) -> str | None:
    """Why ``lease`` (parsed JSON) is not a lease this engine wrote, or None."""
    if not isinstance(lease, dict):
        return f"a JSON {type(lease).__name__}, not a lease object"
    for key, (kinds, said) in LEASE_FIELDS.items():
        value = lease.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"its {key!r} is {value!r:.60}, not {said}"
    if not 0 <= lease["expires"] < MAX_EPOCH_S:
        return f"its 'expires' is {lease['expires']!r}, not a time"
    if not 0 < lease["pid"] < 2**31:  # 0 or -1 would make the liveness check ask about a process group
        return f"its 'pid' is {lease['pid']}, not a process id"
    return None


def is_live(lease: dict, now: float) -> bool:
    return lease["expires"] > now and _alive_here(lease)


class Lease:
    def __init__(self, storage: Storage, owner: str, ttl_s: float | None = None):
        self.storage, self.owner = storage, owner
        self.ttl_s = lease_ttl_s() if ttl_s is None else ttl_s
        self.token = new_token()
        self.name = f"{LOCK_DIR}/{self.token}.json"
        self.confirmed_until = 0.0  # this process's monotonic clock: held without a gap until then
        self._renewing = threading.Lock()  # the heartbeat and a commit's check, one at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Hold the folder, or raise ``FolderInUse`` naming the holder."""
        self.storage.makedirs(LOCK_DIR)
        self._remove_dead()
        self._write()
        holder = self._other_live()
        if holder is not None:
            self.storage.delete(self.name)
            raise FolderInUse(
                f"{self.storage.location} is in use by another job ({holder.get('owner', '?')}, pid {holder.get('pid')} "
                f"on {holder.get('host')}, lease until {time.strftime('%H:%M:%S', time.localtime(holder['expires']))}): "
                f"wait for it to finish, or use another --out")
        self._thread = threading.Thread(target=self._heartbeat, name="motionfleet-lease", daemon=True)
        self._thread.start()

    def assert_held(self) -> None:
        """Raise ``LeaseLost`` unless the lease is held without a gap and its file (our token) is there."""
        with self._renewing:
            held = time.monotonic() < self.confirmed_until and self.storage.size(self.name) is not None
            if not held:
                self.confirmed_until = 0.0
        if not held:
            raise LeaseLost(f"the lease on {self.storage.location} was lost (held by nobody, or by another job, "
                            f"after this one stalled past it): stopping before committing anything more; rerun the "
                            f"job to resume")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.storage.delete(self.name)

    def _write(self) -> float:
        """Write the lease with a fresh expiry; returns when the write began (monotonic)."""
        started = time.monotonic()
        body = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "expires": time.time() + self.ttl_s}
        self.storage.write(self.name, json.dumps(body).encode())
        self.confirmed_until = started + self.ttl_s / 2
        return started

    def _leases(self) -> dict[str, dict]:
        leases = {}
        for name in self.storage.listing(LOCK_DIR):
            if name.endswith(".json"):
                try:
                    leases[name] = self._read(f"{LOCK_DIR}/{name}")
                except FileNotFoundError:
                    continue  # released meanwhile (a PUT is whole, a local rename too: never half written)
        return leases

    def _read(self, rel: str) -> dict:
        fix = "remove it if no motionfleet job is using this folder, then rerun"
        lease = self.storage.read_json(rel, fix)
        problem = lease_problem(lease)
        if problem is not None:
            raise self.storage.damaged(rel, f"not a motionfleet lease ({problem})", fix)
        return lease

    def _other_live(self) -> dict | None:
        now = time.time()
        mine = f"{self.token}.json"
        return next((lease for name, lease in sorted(self._leases().items()) if name != mine and is_live(lease, now)),
                    None)

    def _remove_dead(self) -> None:
        now = time.time()
        for name, lease in self._leases().items():
            if not is_live(lease, now):
                self.storage.delete(f"{LOCK_DIR}/{name}")

    def _renew(self) -> None:
        """Extend the lease if it is held without a gap, else mark it lost (``confirmed_until`` 0)."""
        with self._renewing:
            previous = self.confirmed_until
            if time.monotonic() >= previous or self.storage.size(self.name) is None:
                self.confirmed_until = 0.0  # stalled past it, or removed by a contender that found it expired
                return
            self._write()
            if time.monotonic() >= previous:
                self.confirmed_until = 0.0  # the write landed after the gap began: a contender may hold it now

    def _heartbeat(self) -> None:
        while self.confirmed_until and not self._stop.wait(self.ttl_s / 3):
            try:
                self._renew()
            except OSError:
                pass  # a storage hiccup: the next beat tries again while the confirmation lasts
