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
to well within ``ttl``.

Every ``_lock/*.json`` is read as untrusted: a lease is a JSON object with ``owner`` and ``host``
(strings), ``pid`` (an integer) and ``expires`` (a number, epoch seconds). Anything else (a hand-
edited ``{}``, an expiry written as a string, bytes that are not JSON) is neither trusted nor
removed: acquiring or renewing the lease stops with ``DamagedFile``, one line naming the file.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from motionfleet.core.jobfolder.storage import DamagedFile, Storage, new_token

LOCK_DIR = "_lock"
DEFAULT_TTL_S = 60.0
# What each field of a lease must be: (types, as said in an error).
LEASE_FIELDS = {"owner": (str, "a string"), "host": (str, "a string"), "pid": (int, "an integer"),
                "expires": ((int, float), "a number")}
MAX_EPOCH_S = 1e11  # year 5138: beyond it (or NaN) an expiry is not a time ``time.localtime`` can show


class FolderRefused(RuntimeError):
    """The output folder cannot take this job now (the message says why and what to do)."""


class FolderInUse(FolderRefused):
    """Another live job holds the folder."""


class LeaseLost(FolderRefused):
    """This job's lease expired or was taken over: it must stop committing."""


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
    def __init__(self, storage: Storage, owner: str, ttl_s: float = DEFAULT_TTL_S):
        self.storage, self.owner, self.ttl_s = storage, owner, ttl_s
        self.token = new_token()
        self.name = f"{LOCK_DIR}/{self.token}.json"
        self.confirmed_until = 0.0  # this process's clock: held for sure until then
        self._stop = threading.Event()
        self._thread = None

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
        """Cheap unless the last confirmation is old: then renew, and raise ``LeaseLost`` if taken."""
        if time.monotonic() < self.confirmed_until:
            return
        self._renew()
        if time.monotonic() >= self.confirmed_until:
            raise LeaseLost(f"the lease on {self.storage.location} was lost (expired or taken over): stopping "
                            f"before committing anything more; rerun the job to resume")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.storage.delete(self.name)

    def _write(self) -> None:
        started = time.monotonic()
        body = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "expires": time.time() + self.ttl_s}
        self.storage.write(self.name, json.dumps(body).encode())
        self.confirmed_until = started + self.ttl_s / 2

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
        if self.storage.size(self.name) is None or self._other_live() is not None:
            self.confirmed_until = 0.0  # taken over while this process was stalled
            return
        self._write()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._renew()
            except (OSError, DamagedFile):
                pass  # storage hiccup or a damaged lease: the next beat (or a commit's assert_held) tries again
