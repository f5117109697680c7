"""A multi-node Ray cluster on loopback for the tests, run in its own process.

``LoopbackCluster(nodes=2)`` starts ``python tests/loopback_cluster.py`` which builds a
``ray.cluster_utils.Cluster``: a head without CPUs and ``nodes`` worker nodes of one CPU each, all
bound to 127.0.0.2 (Ray rewrites 127.0.0.1 to the machine's interface address), with token auth
on and a token of its own. The test process stays free of Ray state; it sends one-line commands
(``kill N`` removes worker node N without a graceful stop, ``add`` starts a new one) and reads
one-line answers. ``env`` is what a driver needs to join (the cluster's token). With
``pin_cores=True`` worker node N's processes run on core N only (its raylet is started under that
CPU affinity, which Ray's worker processes inherit), so that nodes stop sharing this machine's
cores: what a benchmark of where work runs needs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.2"


class LoopbackCluster:
    def __init__(self, temp_dir: Path, nodes: int = 2, pin_cores: bool = False):
        token = secrets.token_hex(16)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "MOTIONFLEET_PROGRESS": "0"}
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.process = subprocess.Popen([sys.executable, __file__, str(temp_dir), str(nodes), str(int(pin_cores))], env=self.env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.address = self._answer()

    def _answer(self) -> str:
        line = self.process.stdout.readline().strip()
        if not line.startswith("ok"):
            raise RuntimeError(f"loopback cluster: {line or 'exited'}")
        return line[3:]

    def command(self, text: str) -> str:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        try:
            self.command("quit")
        finally:
            self.process.wait(timeout=60)


def serve(temp_dir: str, nodes: int, pin_cores: bool) -> None:
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": HOST, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **common})
    everywhere = os.sched_getaffinity(0)
    workers = []
    for index in range(nodes):
        if pin_cores:  # the node's raylet, and so its workers, inherit this
            os.sched_setaffinity(0, {sorted(everywhere)[index % len(everywhere)]})
        workers.append(cluster.add_node(num_cpus=1, **common))
    os.sched_setaffinity(0, everywhere)
    cluster.wait_for_nodes()
    print(f"ok {cluster.address}", flush=True)
    for line in sys.stdin:
        verb, *args = line.split()
        if verb == "kill":
            cluster.remove_node(workers[int(args[0])], allow_graceful=False)
        elif verb == "add":
            workers.append(cluster.add_node(num_cpus=1, **common))
            cluster.wait_for_nodes()
        elif verb == "quit":
            cluster.shutdown()
            print("ok", flush=True)
            return
        print(f"ok {len(workers)}", flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")
