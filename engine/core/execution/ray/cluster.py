"""Joining a Ray cluster, or starting the embedded one on this machine.

``--address`` joins a running cluster with that cluster's own settings (its token auth, its temp
folder): nothing here changes them. Without it the job starts an embedded single-machine cluster:

* Ray 2.60 binds its GCS, raylet and worker servers on every interface whatever
  ``node_ip_address`` says (measured with ``ss -ltnp``), so the embedded cluster keeps Ray's token
  auth, with a fresh random token that only this process and the Ray processes it starts know: a
  client elsewhere that reaches the ports is refused (``AuthenticationError``). The variables are
  restored when the cluster stops.
* its processes die with the driver, also when the driver is killed (``reaper``);
* its session folder is ``$TMPDIR/mf-ray-<pid>-*`` (short: Ray's socket paths must stay under
  the 107-byte AF_UNIX limit); it is removed at shutdown, and folders left by a killed driver (whose
  pid is gone) are removed by the next job.

``ray.init`` is process-wide, so ``connect`` and ``disconnect`` hold one lock: jobs started from
several threads of one process (the Python API) share the one cluster the first of them started.
Ray starts the embedded GCS and raylet with ``PR_SET_PDEATHSIG``, which Linux fires when the
*thread* that started them exits, not the process: started from a job's thread, the cluster died
with it when that job ended, and another thread's job lost its GCS and Ray aborted the process
(measured: ``tests/test_lease_races.py``, two API threads). So a keeper thread starts it and lives
until ``disconnect``.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

import ray
from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # compiled (Cython), no type stubs

from motionfleet.core.errors import ClusterUnreachable
from motionfleet.core.execution.ray import reaper
from motionfleet.core.io import interrupts
from motionfleet.core.io.quiet import native_stderr_silenced

REACH_TIMEOUT_S = 10.0
TEMP_PREFIX = "mf-ray-"
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

_embedded: dict = {}  # while an embedded cluster runs: its temp folder and the variables it replaced
_connection = threading.Lock()  # two threads seeing Ray uninitialised at once would both call ray.init


def connect(address: Optional[str]) -> None:
    """Join ``address``; without one, the cluster a ``ray job submit`` runs us on (``RAY_ADDRESS``),
    else start the embedded cluster."""
    with _connection:
        if ray.is_initialized():
            return
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            _join(address)
        else:
            _start_embedded()
        interrupts.reclaim()  # ray.init replaced the SIGTERM handler with its sys.exit(15)


def disconnect() -> None:
    with _connection:
        if ray.is_initialized():
            ray.shutdown()
        if _embedded:
            _embedded.pop("keeper").set()
            if _embedded.get("reaper") is not None:
                _embedded["reaper"].kill()
                _embedded["reaper"].wait()
            _restore_auth(_embedded.pop("environ"))
            shutil.rmtree(_embedded.pop("temp_dir"), ignore_errors=True)
            _embedded.clear()


def _join(address: str) -> None:
    if address != "auto" and "://" not in address:  # a plain GCS host:port (not ray:// or http://)
        check_reachable(address)
        check_admitted(address)
    ray.init(address=address, logging_level=logging.ERROR)


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise ``ClusterUnreachable`` unless a TCP connection to the GCS at ``host:port`` opens
    within ``timeout_s`` (``ray.init`` itself retries for minutes, printing C++ logs)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"--address {address!r} is not host:port (or 'auto'): give the head node's GCS "
                                 f"address, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterUnreachable(f"cannot reach a Ray cluster at {address} ({err.strerror or err}): start it with "
                                 f"`ray start --head` or fix --address") from None


def check_admitted(address: str) -> None:
    """Raise ``ClusterUnreachable`` at once when the GCS at ``address`` refuses this process's token
    (``ray.init`` retries for 20 s, logging every refusal, then says only "Failed to connect")."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # compiled (Cython), no type stubs
    from ray.exceptions import AuthenticationError, RpcError

    try:
        with native_stderr_silenced():  # Ray's C++ client logs the refusal before raising it
            GcsClient(address=address)
    except AuthenticationError:
        raise ClusterUnreachable(f"the Ray cluster at {address} refused this process's auth token: export "
                                 f"RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)") from None
    except RpcError as err:  # the port answers but no GCS does (measured: after 40 s)
        raise ClusterUnreachable(f"no Ray cluster answers at {address} ({str(err).strip().splitlines()[0]}): start it with "
                                 f"`ray start --head` or fix --address") from None


def _start_embedded() -> None:
    remove_stale_temp_dirs()
    temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    _embedded.update(temp_dir=temp_dir, environ=_private_auth())
    _embedded["keeper"] = threading.Event()
    start = lambda: ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR, _temp_dir=temp_dir)
    _run_in_keeper_thread(start, _embedded["keeper"])
    _embedded["reaper"] = reaper.watch(os.getpid())


def _run_in_keeper_thread(start: Callable[[], object], stop: threading.Event) -> None:
    """``start()`` in a daemon thread that then waits for ``stop`` (see the module doc); its error is raised here."""
    outcome: queue.Queue = queue.Queue(maxsize=1)

    def keep() -> None:
        try:
            start()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            outcome.put(err)
            return
        outcome.put(None)
        stop.wait()

    threading.Thread(target=keep, name="motionfleet-ray-keeper", daemon=True).start()
    error = outcome.get()
    if error is not None:
        raise error


def _private_auth() -> dict:
    """Token auth with a fresh token for the embedded cluster; returns the variables it replaced."""
    before = {name: os.environ.get(name) for name in _AUTH_VARS}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    Config.initialize("")  # Ray caches the auth mode at import; this is how Ray itself refreshes it
    AuthenticationTokenLoader.instance().reset_cache()
    return before


def _restore_auth(before: dict) -> None:
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def remove_stale_temp_dirs(root: Optional[str] = None) -> list[Path]:
    """Remove embedded-cluster folders whose driver (the pid in the name) no longer runs."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)) and folder.stat().st_uid == os.getuid():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_chunks(fn: Callable, chunks: list[list], address: Optional[str]) -> list:
    """``[fn(item) for chunk in chunks for item in chunk]`` as one Ray task per chunk over the
    cluster's CPUs (planning work), in input order."""
    connect(address)
    task = ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")(_map_chunk)
    return [result for chunk in ray.get([task.remote(fn, chunk) for chunk in chunks]) for result in chunk]


def _map_chunk(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]
