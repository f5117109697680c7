"""Where model actors go: spread over the nodes that have what they need, and how many shards each runs at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ray

from motionfleet.core.errors import NoWorkers


@dataclass(frozen=True)
class Placement:
    """One actor: the node it is placed on and what it holds there."""
    node_id: str
    cpus: float
    gpus: float

    @property
    def threads(self) -> int:
        return max(1, math.floor(self.cpus))


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def resources_line() -> str:
    """The cluster's free CPUs and GPUs, for a message."""
    return ", ".join(f"{k} {v:g}" for k, v in sorted(ray.available_resources().items()) if k in ("CPU", "GPU")) or "none"


def placements(nodes: list[dict], workers: int, device: str) -> list[Placement]:
    """Spread ``workers`` actors over the nodes that have the resource they need, each the next
    to the node with the most of it left per actor. A CPU actor holds its equal share of its node's
    CPUs; a GPU actor one GPU (a share when there are more actors than GPUs) and its share of
    half the node's CPUs, the other half left to the CPU stages (video decoding) and Ray itself."""
    key = "GPU" if device == "cuda" else "CPU"
    usable = [n for n in nodes if n.get("Resources", {}).get(key, 0) > 0]
    if not usable:
        raise NoWorkers(f"no node of the Ray cluster offers a {key} (nodes: {len(nodes)})")
    counts = [0] * len(usable)
    for _ in range(workers):
        best = max(range(len(usable)), key=lambda i: (usable[i]["Resources"][key] / (counts[i] + 1), -i))
        counts[best] += 1
    out = []
    for node, count in zip(usable, counts):
        cpus, gpus = node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0)
        for _ in range(count):
            if key == "GPU":
                out.append(Placement(node["NodeID"], cpus / 2 / count, min(1.0, gpus / count)))
            else:
                out.append(Placement(node["NodeID"], cpus / count, 0.0))
    return out


def spare_cpus(nodes: list[dict], places: list[Placement]) -> float:
    """CPUs of the cluster that no model actor holds: where CPU stages (video decoding) run."""
    return sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes) - sum(p.cpus for p in places)


def shards_at_once(places: list[Placement], spare: float, concurrent: bool) -> int:
    """Shards each actor runs at the same time. One, unless the runner takes concurrent shards and
    the actors leave CPUs spare: then each shard's CPU stage is a one-CPU Ray task on a spare CPU
    (``prefetch.stream``), and each actor runs one shard more than its share of the spare CPUs, so
    that every spare CPU decodes and one shard's clips are always ready for the model."""
    if not concurrent or spare < 1 or not places:
        return 1
    return 1 + math.ceil(math.floor(spare) / len(places))


def stage_streams(places: list[Placement], spare: float, concurrent: bool) -> int:
    """CPU stages each actor may hold open at once as Ray tasks on the spare CPUs (0: none; its
    stages run in its own threads): its share of them, at least one. One call of an actor that
    batches across shards opens a stage per span and reads them in turn; a stage paused by
    backpressure keeps its CPU, so with more open stages than CPUs the stage it reads next could
    wait for a CPU that its own paused stages hold. Within its share, every open stage has one."""
    if not concurrent or spare < 1 or not places:
        return 0
    return max(1, math.floor(spare) // len(places))
