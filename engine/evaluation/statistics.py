"""Evaluation statistics that do not move with the cluster.

Every metric is a function of per-batch statistics (embedding sums and Gram matrices, rank
counts, distance sums) folded in a fixed order: the order of batches planned before any work,
never the order shards finish in. Each fold is elementwise float64 arithmetic with no BLAS call
(whose reduction order can change with the thread count), so the same embeddings give the same
bits on any number of workers.

Definitions follow the InterHuman evaluators (InterGen's and DHVAE's ``eval/interhuman``):
- FID: ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2)), C the unbiased covariance;
- R-precision top k: share of texts whose own motion is among the k motions nearest to it in
  its matching batch (Euclidean distance of evaluator embeddings; ties broken by batch position,
  as a stable argsort does);
- MM Dist: mean distance of each text to its own motion;
- Diversity: mean distance of seeded random pairs of motions;
- MModality: mean distance of seeded random pairs among the motions generated for one text;
- over replications: mean and 1.96 sigma / sqrt(n) (sigma with ddof 0, as ``np.std``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.96
TOP_K = 3


def mean_and_interval(values) -> tuple[float, float]:
    """(mean, 1.96 sigma / sqrt(n)) of one metric's per-replication values."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(Z_95 * v.std() / math.sqrt(len(v)))


@dataclass
class Moments:
    """Count, sum and Gram matrix (sum of x x^T) of embeddings, float64."""

    count: int
    total: np.ndarray
    gram: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "Moments":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, embeddings: np.ndarray) -> "Moments":
        """Moments of one batch, rows added one after another (a fixed elementwise order)."""
        x = np.asarray(embeddings, dtype=np.float64)
        moments = cls.empty(x.shape[1])
        for row in x:
            moments.total += row
            moments.gram += np.multiply.outer(row, row)
        moments.count = len(x)
        return moments

    def add(self, other: "Moments") -> None:
        self.count += other.count
        self.total += other.total
        self.gram += other.gram

    def mean_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, unbiased covariance) as ``np.cov(x, rowvar=False)`` gives them."""
        if self.count < 2:
            raise ValueError("a covariance needs at least 2 embeddings")
        mu = self.total / self.count
        cov = (self.gram - self.count * np.multiply.outer(mu, mu)) / (self.count - 1)
        return mu, (cov + cov.T) / 2


def fold_moments(batches) -> Moments:
    """Moments of all batches, added in the order given."""
    batches = [np.asarray(b) for b in batches]
    out = Moments.empty(batches[0].shape[1])
    for batch in batches:
        out.add(Moments.of(batch))
    return out


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """FID between two Gaussians. tr((C1 C2)^(1/2)) = sum sqrt(eig(C1^(1/2) C2 C1^(1/2))), a
    symmetric PSD matrix, so no complex square root (as scipy's ``sqrtm`` of C1 C2) is needed."""
    root = _psd_sqrt(cov1)
    middle = root @ cov2 @ root
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances in float64, by explicit differences (no GEMM)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


@dataclass(frozen=True)
class MatchStats:
    """One matching batch: top-1..k hit counts, summed text-to-own-motion distance, size, and per
    text its own motion's rank (0: nearest) and distance, from which the counts and sum are made."""

    hits: tuple[int, ...]
    distance_sum: float
    count: int
    ranks: tuple[int, ...]
    distances: tuple[float, ...]


def match_stats(text: np.ndarray, motion: np.ndarray, k: int = TOP_K) -> MatchStats:
    """Text i's own motion is motion i; its rank counts the motions strictly nearer plus the
    equally near ones before it (a stable argsort's order)."""
    dist = distance_matrix(text, motion)
    own = np.diag(dist)
    n = len(dist)
    nearer = (dist < own[:, None]).sum(1)
    tied_before = np.array([(dist[i, :i] == own[i]).sum() for i in range(n)])
    rank = nearer + tied_before
    hits = tuple(int((rank < j + 1).sum()) for j in range(k))
    return MatchStats(hits, float(sum(own.tolist())), n, tuple(int(x) for x in rank), tuple(own.tolist()))


def mean_pair_distance(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Mean ||e[first_i] - e[second_i]||, summed in pair order."""
    e = np.asarray(embeddings, np.float64)
    distances = np.sqrt(((e[first] - e[second]) ** 2).sum(-1))
    return float(sum(distances.tolist()) / len(distances))


def pair_indices(rng: np.random.Generator, population: int, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Two draws of ``pairs`` indices without replacement (the public evaluators' pairing)."""
    if population < pairs:
        raise ValueError(f"{pairs} pairs need at least {pairs} items, got {population}")
    return rng.choice(population, pairs, replace=False), rng.choice(population, pairs, replace=False)
