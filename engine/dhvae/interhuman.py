"""The InterHuman test split on disk, and a tiny synthetic dataset in the same layout.

Layout (InterGen's ``data/interhuman``, as DHVAE's ``datasets/interhuman.py`` reads it)::

    DIR/split/test.txt                      motion ids, one a line
    DIR/split/ignore_list.txt               optional: ids to leave out
    DIR/annots/<id>.txt                     the interaction's descriptions, one a line
    DIR/motions_processed/person1/<id>.npy  (T, 262) float: person 1's global features
    DIR/motions_processed/person2/<id>.npy  (T, 262): person 2, in person 1's frame
    DIR/global_mean.npy, DIR/global_std.npy (262,): the normalisation the generator was trained with

The 262 features per frame are InterGen's: 22 x 3 joint positions, 22 x 3 velocities, 21 x 6
rotations, 4 foot contacts. The released InterHuman ``motions_processed`` files hold the raw
capture (492 columns); turn them into the 262-d features with InterGen's ``process_motion_np``
(and its rigid transform of person 2 into person 1's frame) before pointing the evaluator here;
a 492-column file is refused with that message. Like the public loader, motions are cut to 300
frames and motions shorter than 15 frames are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motionfleet.common.text import builtin_prompts
from motionfleet.core.errors import MissingFile
from motionfleet.dhvae.interclip import FEATURES_PER_PERSON

MAX_FRAMES = 300
MIN_FRAMES = 15
RAW_COLUMNS = 492


@dataclass(frozen=True)
class TestMotion:
    name: str
    texts: tuple[str, ...]
    frames: int


@dataclass(frozen=True)
class InterHumanSplit:
    root: Path
    motions: tuple[TestMotion, ...]
    left_out: tuple[tuple[str, str], ...]  # (id, reason)
    digest: str  # sha256 over ids, texts and motion bytes: part of the evaluation's fingerprint

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        return _vector(self.root / "global_mean.npy"), _vector(self.root / "global_std.npy")

    def motion(self, name: str) -> np.ndarray:
        """(2, T, 262) float32 de-normalised features of both people, T <= 300."""
        people = [np.load(self.root / "motions_processed" / p / f"{name}.npy") for p in ("person1", "person2")]
        return np.stack([p[:MAX_FRAMES] for p in people]).astype(np.float32)


def _vector(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MissingFile(f"{path} is missing: the evaluator de-normalises generated motion with the dataset's "
                          "global_mean.npy and global_std.npy (262 values each)")
    v = np.load(path).astype(np.float32).reshape(-1)
    if v.shape != (FEATURES_PER_PERSON,):
        raise ValueError(f"{path} holds {v.size} values, expected {FEATURES_PER_PERSON}")
    return v


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_split(root: str | Path, test_file: str = "split/test.txt", ignore_file: str = "split/ignore_list.txt") -> InterHumanSplit:
    """The motions ``test_file`` names less those ``ignore_file`` names (both relative to ``root``:
    the protocol preset's ``[split]``)."""
    root = Path(root)
    split_file = root / test_file
    if not split_file.is_file():
        raise MissingFile(f"{split_file} is missing: --dataset must be an InterHuman-layout folder (docs/evaluate.md)")
    ignore_path = root / ignore_file
    ignored = set(_lines(ignore_path)) if ignore_path.is_file() else set()
    motions, left_out, digest = [], [], hashlib.sha256()
    for name in sorted(set(_lines(split_file)) - ignored):
        entry, reason = _read_entry(root, name)
        if entry is None:
            left_out.append((name, reason))
            continue
        motions.append(entry)
        digest.update(name.encode() + b"\0" + "\n".join(entry.texts).encode() + b"\0")
        for person in ("person1", "person2"):
            digest.update((root / "motions_processed" / person / f"{name}.npy").read_bytes())
    if not motions:
        raise ValueError(f"{split_file} names no usable motion ({len(left_out)} left out)")
    for name in ("global_mean.npy", "global_std.npy"):
        digest.update((root / name).read_bytes() if (root / name).is_file() else b"")
    return InterHumanSplit(root, tuple(motions), tuple(left_out), digest.hexdigest())


def _read_entry(root: Path, name: str) -> tuple[TestMotion | None, str]:
    annots = root / "annots" / f"{name}.txt"
    paths = [root / "motions_processed" / p / f"{name}.npy" for p in ("person1", "person2")]
    missing = [str(p.relative_to(root)) for p in [annots, *paths] if not p.is_file()]
    if missing:
        return None, "missing " + ", ".join(missing)
    texts = tuple(_lines(annots))
    if not texts:
        return None, "no description"
    shapes = [np.load(p, mmap_mode="r").shape for p in paths]
    if any(len(s) != 2 for s in shapes) or shapes[0][0] != shapes[1][0]:
        return None, f"motion shapes {shapes} are not two (T, 262) arrays of one length"
    columns = shapes[0][1]
    if columns == RAW_COLUMNS:
        raise ValueError(f"{paths[0]} holds raw InterHuman capture ({RAW_COLUMNS} columns): convert the test split to "
                         f"InterGen's 262-d global features first (docs/evaluate.md, InterHuman)")
    if columns != FEATURES_PER_PERSON or shapes[1][1] != FEATURES_PER_PERSON:
        return None, f"motion has {columns} columns, expected {FEATURES_PER_PERSON}"
    if shapes[0][0] < MIN_FRAMES:
        return None, f"{shapes[0][0]} frames, fewer than {MIN_FRAMES}"
    return TestMotion(name, texts, min(shapes[0][0], MAX_FRAMES)), ""


def write_synthetic(root: str | Path, count: int = 24, frames: tuple[int, int] = (16, 40), seed: int = 0) -> Path:
    """A tiny dataset in the layout above: ``count`` motions of smooth random features (each
    person a random walk in feature space), two descriptions each from the built-in prompts,
    and the normalisation computed from the motions. Deterministic in ``seed``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    prompts = builtin_prompts()
    for sub in ("split", "annots", "motions_processed/person1", "motions_processed/person2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names, frames_all = [], []
    for i in range(count):
        name = f"{i:05d}"
        length = int(rng.integers(frames[0], frames[1] + 1))
        for person in ("person1", "person2"):
            walk = np.cumsum(rng.normal(0, 0.1, (length, FEATURES_PER_PERSON)), axis=0) + rng.normal(0, 1, FEATURES_PER_PERSON)
            np.save(root / "motions_processed" / person / f"{name}.npy", walk.astype(np.float32))
            frames_all.append(walk)
        texts = [prompts[(2 * i) % len(prompts)], prompts[(2 * i + 1) % len(prompts)]]
        (root / "annots" / f"{name}.txt").write_text("\n".join(texts) + "\n")
        names.append(name)
    (root / "split" / "test.txt").write_text("\n".join(names) + "\n")
    stacked = np.concatenate(frames_all)
    np.save(root / "global_mean.npy", stacked.mean(0).astype(np.float32))
    np.save(root / "global_std.npy", stacked.std(0).astype(np.float32) + 1e-3)
    return root
