"""InterHuman protocol for dhvae: generate the test split, embed with InterCLIP, compute FID,
R-precision, MM Dist, Diversity and MModality over replications.

The published sizes (20 replications, matching batches of 96, ...) are data:
``protocols/interhuman.toml``, each with the public file and line it follows; flags override them.
The built-in synthetic set (no ``--dataset``) cannot fill them: every size the flags leave is
scaled to ``BUILTIN_SIZES`` (and dummy evaluator weights to the tiny InterCLIP), and metrics.json
says which (``protocol_scaled``).

What is fixed before any work, from (seed, dataset) alone:
- replication r's description of each test motion: (seed, id, r) picks one of its annotations;
- its generated sample: generate-job id ``<id>/r<r>``, noise seeded by (seed, that id, 0);
- its matching batches: a seeded permutation of the test ids cut into batches of 96 (the
  remainder is left out of R-precision, MM Dist, FID and Diversity, as the public loaders'
  ``drop_last`` does, but it is the same ids every run);
- MModality: a seeded choice of 100 ids, each generated 30 times (generate-job id
  ``<id>/mm<r>``, repeats 0-29), and seeded pairs among the 30; Diversity: 300 seeded pairs.
The real data's FID statistics come from every test motion (``reference`` batches). The
``real`` rows put the dataset's own motions through the same matching batches (the public
evaluators' "ground truth" line).

Jobs inside OUT, each an ordinary resumable job folder: ``generate/`` and ``generate-mm/``
(``motionfleet generate`` jobs over ``prompts.jsonl`` / ``prompts-mm.jsonl``), then ``embed/``,
whose shards are groups of planned batches and whose rows are one batch each: its motion
embeddings and, for matching batches, its rank counts and distance sum. The metrics are folded
from those rows in planned order (``evaluation/statistics.py``).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar, Union

import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.weights import weights_description
from motionfleet.core.execution import RunContext, WarmWorker, worker_layout
from motionfleet.core.io import provenance
from motionfleet.core.io.rejections import rejected_schema
from motionfleet.core.jobfolder.sink import read_results, result_locations
from motionfleet.core.options import UsageError, output_settings
from motionfleet.core.runtime.seeding import sample_seed
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard
from motionfleet.dhvae import interclip, interx, interx_evaluator
from motionfleet.dhvae import model as dhvae_model
from motionfleet.dhvae.clip_tokens import evaluator_tokens
from motionfleet.dhvae.interhuman import InterHumanSplit, read_split, write_synthetic
from motionfleet.evaluation import protocols
from motionfleet.evaluation.embedding_cache import cached_embeddings
from motionfleet.evaluation.protocols import ProtocolPreset
from motionfleet.evaluation.results import IncompleteEvaluation
from motionfleet.evaluation.statistics import (
    Moments,
    fold_moments,
    frechet_distance,
    match_stats,
    mean_pair_distance,
    pair_indices,
)

PROTOCOL = protocols.DEFAULT["dhvae"]
MAIN_METRIC = "fid"
LOWER_IS_BETTER = {"fid": True, "r_precision_top1": False, "r_precision_top2": False, "r_precision_top3": False,
                   "mm_dist": True, "diversity": None, "multimodality": None}


@dataclass(frozen=True)
class InterHumanProtocol:
    """The protocol's sizes; the published ones are ``protocols/interhuman.toml``'s ``[settings]``."""

    replications: int
    match_batch: int
    diversity_pairs: int
    mm_texts: int
    mm_repeats: int
    mm_pairs: int
    embed_batches_per_shard: int = 8


SIZES = ("replications", "match_batch", "diversity_pairs", "mm_texts", "mm_repeats", "mm_pairs")
# The built-in set's sizes: its 16 motions fill 2 matching batches of 8 (16 motions for Diversity);
# 2 replications still give an interval; 2 MModality texts x 3 generations. 44 generated samples
# and the tiny InterCLIP (with dummy weights the released size's numbers mean no more), so that
# `evaluate --family dhvae --out DIR` takes tens of seconds on two CPU cores.
BUILTIN_MOTIONS = 16
BUILTIN_SIZES = {"replications": 2, "match_batch": 8, "diversity_pairs": 16, "mm_texts": 2, "mm_repeats": 3, "mm_pairs": 2}
BUILTIN_EVALUATOR = "tiny"
BUILTIN_WHY = (f"the built-in synthetic set has {BUILTIN_MOTIONS} motions and tests the pipeline (its numbers mean "
               f"nothing): the published sizes need a real test split (--dataset) and would generate thousands of samples")


def protocol_sizes(preset: ProtocolPreset, given: dict, builtin: bool) -> tuple[InterHumanProtocol, dict]:
    """The preset's sizes under the flags ``given``; for the built-in set, each size the flags
    leave is scaled to ``BUILTIN_SIZES``. Returns (the protocol, {size: {"preset", "used"}} scaled)."""
    sizes = {name: given.get(name, preset.settings[name]) for name in SIZES}
    scaled = {}
    if builtin:
        for name, small in BUILTIN_SIZES.items():
            if name not in given and sizes[name] > small:
                scaled[name] = {"preset": sizes[name], "used": small}
                sizes[name] = small
    extra = {k: v for k, v in given.items() if k not in SIZES}
    return InterHumanProtocol(**sizes, **extra), scaled


def evaluator_spec(spec: EvaluatorSpec, preset: ProtocolPreset, builtin: bool) -> tuple[EvaluatorSpec, dict]:
    """The evaluator's size: the one given, else the protocol preset's; the built-in set's dummy
    weights (no checkpoint) are the tiny InterCLIP's. Returns (the spec, what was scaled)."""
    if spec.preset is not None:
        return spec, {}
    published = preset.evaluator["preset"]
    if builtin and spec.checkpoint is None and published != BUILTIN_EVALUATOR:
        return replace(spec, preset=BUILTIN_EVALUATOR), {"evaluator_preset": {"preset": published, "used": BUILTIN_EVALUATOR}}
    return replace(spec, preset=published), {}


@dataclass(frozen=True)
class EvaluatorSpec:
    checkpoint: Optional[str] = None  # the released interclip.ckpt; None: seeded dummy weights
    preset: Optional[str] = None  # InterCLIP's size for dummy weights; None: the protocol preset's
    dummy_seed: int = 0
    vocab: Optional[str] = None  # CLIP's bpe_simple_vocab_16e6.txt.gz

    def size(self) -> str:
        """The evaluator's preset, once ``evaluator_spec`` has chosen it."""
        if self.preset is None:
            raise ValueError("the evaluator's preset is not chosen yet: evaluator_spec picks the protocol preset's")
        return self.preset


@dataclass(frozen=True)
class EvalBatch:
    kind: str  # generated | real | reference | mm
    replication: int
    index: int
    motions: tuple[tuple[str, str, int], ...]  # (source: generate | generate-mm | dataset, id, repeat)
    texts: tuple[str, ...] = ()  # one per motion for matching batches


# --- plan ------------------------------------------------------------------------------------


def _rng(seed: int, purpose: str, replication: int) -> np.random.Generator:
    return np.random.default_rng(sample_seed(seed, purpose, replication))


def description(seed: int, motion, replication: int) -> str:
    return motion.texts[sample_seed(seed, f"text/{motion.name}", replication) % len(motion.texts)]


def check_protocol(split: InterHumanSplit, p: InterHumanProtocol) -> None:
    n = len(split.motions)
    matched = n // p.match_batch * p.match_batch
    problems = []
    if p.replications < 1:
        problems.append("--replications must be >= 1")
    if matched == 0:
        problems.append(f"the split has {n} motions, fewer than one matching batch of {p.match_batch} (--match-batch)")
    elif matched < p.diversity_pairs:
        problems.append(f"{p.diversity_pairs} diversity pairs need {p.diversity_pairs} matched motions, "
                        f"the split gives {matched} (--diversity-pairs)")
    if p.mm_texts > n:
        problems.append(f"{p.mm_texts} MModality texts exceed the split's {n} motions (--mm-texts)")
    if p.mm_texts and p.mm_pairs > p.mm_repeats:
        problems.append(f"{p.mm_pairs} MModality pairs need {p.mm_pairs} repeats, got {p.mm_repeats} (--mm-pairs)")
    if problems:
        raise UsageError("; ".join(problems))


def prompt_rows(split: InterHumanSplit, p: InterHumanProtocol, seed: int) -> tuple[list[dict], list[dict]]:
    """(generation prompts, MModality prompts) as generate-job jsonl rows."""
    main = [{"id": f"{m.name}/r{r}", "text": description(seed, m, r), "num_frames": m.frames}
            for r in range(p.replications) for m in split.motions]
    mm = [{"id": f"{split.motions[i].name}/mm{r}", "text": description(seed, split.motions[i], r),
           "num_frames": split.motions[i].frames}
          for r in range(p.replications) for i in mm_choice(split, p, seed, r)]
    return main, mm


def mm_choice(split: InterHumanSplit, p: InterHumanProtocol, seed: int, replication: int) -> list[int]:
    return sorted(_rng(seed, "mm-texts", replication).permutation(len(split.motions))[: p.mm_texts].tolist())


def plan_batches(split: InterHumanSplit, p: InterHumanProtocol, seed: int) -> list[EvalBatch]:
    motions, size = split.motions, p.match_batch
    batches = [EvalBatch("reference", 0, i // size, tuple(("dataset", m.name, 0) for m in motions[i : i + size]))
               for i in range(0, len(motions), size)]
    for r in range(p.replications):
        order = _rng(seed, "match-batches", r).permutation(len(motions))
        for b in range(len(order) // size):
            chosen = [motions[i] for i in order[b * size : (b + 1) * size]]
            texts = tuple(description(seed, m, r) for m in chosen)
            batches.append(EvalBatch("generated", r, b, tuple(("generate", f"{m.name}/r{r}", 0) for m in chosen), texts))
            batches.append(EvalBatch("real", r, b, tuple(("dataset", m.name, 0) for m in chosen), texts))
        for j, i in enumerate(mm_choice(split, p, seed, r)):
            sample = f"{motions[i].name}/mm{r}"
            batches.append(EvalBatch("mm", r, j, tuple(("generate-mm", sample, k) for k in range(p.mm_repeats))))
    return batches


def shard_batches(batches: list[EvalBatch], per_shard: int) -> list[Shard]:
    return [Shard(f"embed-{i // per_shard:05d}", tuple(batches[i : i + per_shard])) for i in range(0, len(batches), per_shard)]


# --- embedding worker ------------------------------------------------------------------------


EvaluatorModel = TypeVar("EvaluatorModel", bound=Union[interclip.InterCLIP, interx_evaluator.InterXEvaluator])
TestSplit = TypeVar("TestSplit", bound=Union[InterHumanSplit, interx.InterXSplit])


class Embedder(ABC, Generic[EvaluatorModel, TestSplit]):
    """An evaluator's embedding worker: holds its model, its tokenizer, the test split and the
    generated motions' index; turns a shard of planned batches into one row per batch. Each
    evaluator loads its own model and split and says how motions and texts are embedded."""

    normalized_input = True  # the generated motions it reads are the training set's normalized features
    model: EvaluatorModel
    split: TestSplit
    weights: str
    tokenizer: str
    frames: int

    def __init__(self, spec: EvaluatorSpec, dataset: str, split_files: dict, generate_dirs: dict[str, str], batch_size: int,
                 device: str):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._load(spec, dataset, split_files)
        self.generated = {source: _index_results(path, self.normalized_input) for source, path in generate_dirs.items()}
        self.cache_key = {"evaluator_weights": self.weights, "evaluator_preset": spec.preset, "dataset": self.split.digest,
                          "frames": self.frames, "device": self.device.type, "torch": torch.__version__}
        self._real: Optional[dict[str, np.ndarray]] = None

    @abstractmethod
    def _load(self, spec: EvaluatorSpec, dataset: str, split_files: dict) -> None:
        """Sets ``model``, ``weights``, ``split``, ``tokenizer`` and ``frames``."""

    def warm_up(self) -> None:
        pass  # the first batch's extra time falls in the shard's timings, not in any metric

    @abstractmethod
    def _features(self, source: str, key: str, repeat: int) -> torch.Tensor:
        """One motion of a batch as the evaluator reads it."""

    def _embed_motions(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for start in range(0, len(features), self.batch_size):
            chunk = features[start : start + self.batch_size]
            motion = interclip.pad_frames(chunk, self.frames).to(self.device)
            lengths = torch.tensor([len(f) for f in chunk], device=self.device)
            out.append(self._embed_motion_batch(motion, lengths).cpu())
        return torch.cat(out)

    @abstractmethod
    def _embed_motion_batch(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings of padded motions."""

    def real_embeddings(self) -> dict[str, np.ndarray]:
        """Test motion name -> its embedding, from the engine cache where an earlier evaluation left them."""
        if self._real is None:
            names = [m.name for m in self.split.motions]
            embeddings = cached_embeddings(self.cache_key, names, self._compute_real_embeddings)
            self._real = dict(zip(names, embeddings))
        return self._real

    def _compute_real_embeddings(self) -> np.ndarray:
        return self._embed_motions([self._features("dataset", m.name, 0) for m in self.split.motions]).numpy()

    def _embed_batch(self, batch: EvalBatch) -> np.ndarray:
        if all(source == "dataset" for source, _, _ in batch.motions):
            real = self.real_embeddings()
            return np.stack([real[key] for _, key, _ in batch.motions])
        return self._embed_motions([self._features(*member) for member in batch.motions]).numpy()

    @abstractmethod
    def _embed_texts(self, texts: tuple[str, ...]) -> torch.Tensor:
        """(B, D) embeddings of texts, on the CPU."""

    def run(self, batches: tuple[EvalBatch, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        rows, rejected, timings = [], [], Timings({"embed": 0.0}, {"samples": 0})
        for batch in batches:
            start = time.perf_counter()
            try:
                motion = self._embed_batch(batch)
            except KeyError as err:
                rejected.append({"sample_id": f"{batch.kind}/{batch.replication}/{batch.index}", "repeat": 0,
                                 "input": "", "reason": f"generated sample {err} is missing (rejected by generate?)"})
                continue
            row = {"kind": batch.kind, "replication": batch.replication, "batch_index": batch.index,
                   "count": len(motion), "dim": motion.shape[1], "motion_embeddings": motion.reshape(-1),
                   "hits": None, "distance_sum": None, "ranks": None, "distances": None, "evaluator_weights": self.weights,
                   "tokenizer": self.tokenizer, "engine_version": provenance.engine_version()}
            if batch.texts:
                stats = match_stats(self._embed_texts(batch.texts).numpy(), motion)
                row.update(hits=list(stats.hits), distance_sum=stats.distance_sum, ranks=list(stats.ranks),
                           distances=list(stats.distances))
            rows.append(row)
            timings.seconds["embed"] += time.perf_counter() - start
            timings.counts["samples"] += len(motion)
        return pa.Table.from_pylist(rows, schema=EMBED_SCHEMA), pa.Table.from_pylist(rejected, schema=rejected_schema("sample_id")), timings


class InterHumanEmbedder(Embedder[interclip.InterCLIP, InterHumanSplit]):
    """InterHuman's evaluator, InterCLIP, with CLIP's tokenizer."""

    def _load(self, spec: EvaluatorSpec, dataset: str, split_files: dict) -> None:
        model, self.weights = interclip.load(spec.checkpoint, spec.size(), spec.dummy_seed)
        self.model = model.to(self.device)
        self.tokens = evaluator_tokens(spec.vocab)
        self.tokenizer = self.tokens.name
        self.split = read_split(dataset, split_files["test"], split_files["ignore"])
        self.frames = max(m.frames for m in self.split.motions)
        mean, std = self.split.normalization()
        self.mean, self.std = torch.from_numpy(mean), torch.from_numpy(std)

    def _features(self, source: str, key: str, repeat: int) -> torch.Tensor:
        if source == "dataset":
            raw = torch.from_numpy(self.split.motion(key))
            return interclip.evaluator_input(raw, torch.zeros(()), torch.ones(()))
        table, rows = self.generated[source]
        i = rows[(key, repeat)]
        motion = torch.tensor(np.asarray(table["motion"][i].as_py(), np.float32))
        return interclip.evaluator_input(motion, self.mean, self.std)

    def _embed_motion_batch(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return interclip.embed_motions(self.model, motion, lengths)

    def _embed_texts(self, texts: tuple[str, ...]) -> torch.Tensor:
        tokens = self.tokens.tokenize(list(texts))
        return torch.cat([interclip.embed_texts(self.model, tokens[i : i + self.batch_size].to(self.device)).cpu()
                          for i in range(0, len(tokens), self.batch_size)])


class InterXEmbedder(Embedder[interx_evaluator.InterXEvaluator, interx.InterXSplit]):
    """The same batches through Inter-X's evaluator (``interx_evaluator.py``): dataset motions and
    generated ones in Inter-X's layout (``interx.py``), texts as the dataset's word/POS tokens."""

    normalized_input = False  # DHVAE's InterX evaluator reads the model's output as it is (motion_rep smpl)
    CHUNK = 32  # the protocol's batch: the real set is embedded in fixed chunks (a GRU's bits follow its batch)

    def _load(self, spec: EvaluatorSpec, dataset: str, split_files: dict) -> None:
        model, self.weights = interx_evaluator.load(spec.checkpoint, spec.size(), spec.dummy_seed)
        self.model = model.to(self.device)
        self.split = read_interx(dataset, split_files)
        self.words = interx.WordVectorizer(Path(dataset) / split_files["glove"])
        self.tokenizer = self.words.name
        self.frames = interx.MAX_FRAMES  # the public loaders pad every motion to 150 frames
        self.batch_size = self.CHUNK

    def _features(self, source: str, key: str, repeat: int) -> torch.Tensor:
        if source == "dataset":
            return interx.dataset_features(self.split.motion(key))
        table, rows = self.generated[source]
        motion = torch.tensor(np.asarray(table["motion"][rows[(key, repeat)]].as_py(), np.float32))
        return interx.generated_features(motion)

    def _embed_motion_batch(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return interx_evaluator.embed_motions(self.model, motion, lengths)

    def _embed_texts(self, texts: tuple[str, ...]) -> torch.Tensor:
        words, pos, lengths = zip(*(self.words.encode(self.split.tokens[text]) for text in texts))
        return interx_evaluator.embed_texts(self.model, torch.from_numpy(np.stack(words)).to(self.device),
                                            torch.from_numpy(np.stack(pos)).to(self.device),
                                            torch.tensor(lengths, device=self.device)).cpu()


def _index_results(path: str, normalized_input: bool = True) -> tuple[pa.Table, dict]:
    table = read_results(path)
    spaces = set(table["motion_space"].to_pylist()) if "motion_space" in table.column_names else set()
    if normalized_input and spaces - {"normalized", "both"}:  # "both" keeps the normalized features in ``motion``
        raise ValueError(f"{path}: the evaluator reads normalized motions, these are {sorted(spaces)}; "
                         f"generate with --motion-space normalized or both")
    table = table.select(["sample_id", "repeat", "motion"])
    keys = zip(table["sample_id"].to_pylist(), table["repeat"].to_pylist())
    return table, {key: i for i, key in enumerate(keys)}


def read_interx(root: str | Path, files: dict) -> interx.InterXSplit:
    return interx.read_split(root, files["test"], files["motions"], files["texts"], files["glove"])


@dataclass(frozen=True)
class EvaluatorLayout:
    """What a protocol's ``[evaluator] layout`` decides: its dataset's reader and synthetic writer,
    the embedding worker, the generated frames it reads and a driver-side check of its checkpoint."""

    read: Callable  # (root, the preset's [split]) -> the test split
    write_synthetic: Callable  # (root, count) -> root
    embedder: type
    motion_dim: int  # generated features a person and frame
    representation: str
    generators: str  # which generators write that representation
    check_checkpoint: Optional[Callable] = None  # (path, preset) -> None or the refusal


LAYOUTS = {
    "interclip": EvaluatorLayout(
        lambda root, files: read_split(root, files["test"], files["ignore"]), write_synthetic, InterHumanEmbedder,
        dhvae_model.MOTION_DIM, "InterHuman's 262-d global features", "a DHVAE release checkpoint or --preset official, "
        "paper or tiny"),
    "interx_t2m": EvaluatorLayout(
        read_interx, interx.write_synthetic, InterXEmbedder, interx.FEATURES_PER_PERSON,
        "Inter-X's SMPL-X layout (55 6D joint rotations and the root translation a person)",
        "a DHVAE checkpoint trained on Inter-X (none is released) or --preset tiny-interx (dummy weights); 262-d "
        "InterHuman frames cannot be mapped onto it: they hold 21 body rotations fitted to InterGen's skeleton, not "
        "SMPL-X's 55 joint rotations with hands, jaw and eyes", interx_evaluator.check_checkpoint),
}


def generator_motion_dim(spec) -> int:
    """Features a person of the frames ``spec``'s model writes, read without loading its weights."""
    from motionfleet.common.weights import is_model_folder, model_folder_files, read_config
    from motionfleet.core.errors import checkpoint_errors
    from motionfleet.dhvae.release import check_release, folder_config

    if spec.checkpoint is None:
        return dhvae_model.PRESETS[spec.preset].motion_dim
    path = Path(spec.checkpoint)
    with checkpoint_errors(path, "dhvae"):
        if is_model_folder(path):
            return folder_config(read_config(model_folder_files(path)[1]), str(path)).motion_dim
        return check_release(path, spec.vae_hparams)[1].motion_dim


def check_generator(spec, protocol: str, layout: EvaluatorLayout) -> None:
    width = generator_motion_dim(spec)
    if width != layout.motion_dim:
        model = spec.checkpoint or f"--preset {spec.preset}"
        raise UsageError(f"--protocol {protocol}: its evaluator reads {layout.representation}, {layout.motion_dim} "
                         f"features a person; {model} writes {width}. Generate with {layout.generators}")


EMBED_SCHEMA = pa.schema([
    ("kind", pa.string()), ("replication", pa.int32()), ("batch_index", pa.int32()), ("count", pa.int32()),
    ("dim", pa.int32()), ("motion_embeddings", pa.list_(pa.float32())), ("hits", pa.list_(pa.int32())),
    ("distance_sum", pa.float64()), ("ranks", pa.list_(pa.int32())), ("distances", pa.list_(pa.float64())),
    ("evaluator_weights", pa.string()), ("tokenizer", pa.string()),
    ("engine_version", pa.string()),
])


# --- metrics ---------------------------------------------------------------------------------


def metric_values(embed_dir: str | Path, p: InterHumanProtocol, seed: int) -> dict[str, dict[str, list[float]]]:
    """Per source (generated, real), per metric, the values of replications 0..R-1."""
    rows = read_results(embed_dir).to_pylist()
    by_kind: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        by_kind.setdefault((row["kind"], row["replication"]), []).append(row)
    for group in by_kind.values():
        group.sort(key=lambda row: row["batch_index"])
    reference = fold_moments([_embeddings(row) for row in by_kind[("reference", 0)]]).mean_covariance()
    out: dict[str, dict[str, list[float]]] = {"generated": {}, "real": {}}
    for r in range(p.replications):
        for source in ("generated", "real"):
            for name, value in _matching_metrics(by_kind[(source, r)], reference, p, seed, r).items():
                out[source].setdefault(name, []).append(value)
        if p.mm_texts:
            mm = np.stack([_embeddings(row) for row in by_kind[("mm", r)]])
            out["generated"].setdefault("multimodality", []).append(multimodality(mm, p.mm_pairs, seed, r))
    return out


def _embeddings(row: dict) -> np.ndarray:
    return np.asarray(row["motion_embeddings"], np.float32).reshape(row["count"], row["dim"])


def _matching_metrics(batches: list[dict], reference, p: InterHumanProtocol, seed: int, r: int) -> dict[str, float]:
    embeddings = [_embeddings(row) for row in batches]
    moments: Moments = fold_moments(embeddings)
    count = moments.count
    hits = np.sum([row["hits"] for row in batches], axis=0)
    distance_sum = 0.0
    for row in batches:  # planned batch order
        distance_sum += row["distance_sum"]
    first, second = pair_indices(_rng(seed, "diversity", r), count, p.diversity_pairs)
    return {
        "fid": frechet_distance(*moments.mean_covariance(), *reference),
        **{f"r_precision_top{k + 1}": float(hits[k]) / count for k in range(len(hits))},
        "mm_dist": distance_sum / count,
        "diversity": mean_pair_distance(np.concatenate(embeddings), first, second),
    }


def sample_rows(out: Path, batches: list[EvalBatch], seed: int) -> list[dict]:
    """samples.parquet's rows (``evaluation/results.py``): each generated sample of each matching
    batch with the rank and distance its embed row holds, in planned order."""
    embed = read_results(out / "embed").select(["kind", "replication", "batch_index", "ranks", "distances"]).to_pylist()
    stats = {(row["replication"], row["batch_index"]): row for row in embed if row["kind"] == "generated"}
    located = result_locations(out / "generate")
    rows = []
    for batch in (b for b in batches if b.kind == "generated"):
        row = stats[(batch.replication, batch.index)]
        for position, ((_, sample_id, repeat), text) in enumerate(zip(batch.motions, batch.texts)):
            path, results_row = located[(sample_id, repeat)]
            rows.append({"sample_id": sample_id, "text_id": sample_id.rsplit("/", 1)[0], "replication": batch.replication,
                         "repeat": repeat, "seed": sample_seed(seed, sample_id, repeat), "text": text,
                         "batch_index": batch.index, "batch_position": position, "rank": row["ranks"][position],
                         "distance": row["distances"][position], "results_file": f"generate/{path}",
                         "results_row": results_row})
    return rows


def multimodality(mm: np.ndarray, pairs: int, seed: int, replication: int) -> float:
    """(texts, repeats, D) embeddings: mean distance over seeded pairs within each text."""
    rng = _rng(seed, "mm-pairs", replication)
    total = 0.0
    for per_text in mm:
        first, second = pair_indices(rng, len(per_text), pairs)
        total += mean_pair_distance(per_text, first, second) * pairs
    return total / (len(mm) * pairs)


# --- the job ---------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    body = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    if not path.is_file() or path.read_text() != body:
        path.write_text(body)
    return str(path)


def evaluate(out_dir: str | Path, spec, settings, evaluator: EvaluatorSpec = EvaluatorSpec(),
             preset: Optional[ProtocolPreset] = None, given: Optional[dict] = None, dataset: Optional[str] = None,
             shard_size: int = 256, workers: int | str = "auto", address: Optional[str] = None) -> dict:
    """Run (or resume) the InterHuman protocol for one dhvae model; returns metrics.json's body.
    ``spec``/``settings``: the generate job's ``ModelSpec`` and ``GenerateSettings`` (its seed
    seeds every choice above); ``preset``: the protocol (default ``protocols/interhuman.toml``),
    whose sizes the ``given`` ones override. Without ``dataset``, a synthetic set is written to
    OUT/dataset and the sizes not given are scaled to it."""
    from motionfleet.core import jobs
    from motionfleet.evaluation.results import METRICS_JSON, read_metrics, write_metrics

    workers, _ = worker_layout(workers, address, settings.device)  # the generate and embed jobs share it
    preset = preset or protocols.load("dhvae", PROTOCOL)
    layout = LAYOUTS.get(preset.evaluator["layout"])
    if layout is None:
        raise UsageError(f"protocol {preset.name}: evaluator layout {preset.evaluator['layout']!r} is not implemented "
                         f"(known: {', '.join(LAYOUTS)})")
    check_generator(spec, preset.name, layout)
    protocol, scaled = protocol_sizes(preset, given or {}, builtin=dataset is None)
    evaluator, scaled_evaluator = evaluator_spec(evaluator, preset, builtin=dataset is None)
    scaled.update(scaled_evaluator)
    if layout.check_checkpoint is not None and evaluator.checkpoint is not None:
        layout.check_checkpoint(evaluator.checkpoint, evaluator.preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = dataset or str(layout.write_synthetic(out / "dataset", count=BUILTIN_MOTIONS))
    split = layout.read(root, preset.split)
    check_protocol(split, protocol)
    seed = settings.seed
    main, mm = prompt_rows(split, protocol, seed)
    started = time.perf_counter()
    ran = [jobs.run_built("dhvae", _write_jsonl(out / "prompts.jsonl", main), spec, replace(settings, repeats=1),
                          out=out / "generate", shard_size=shard_size, workers=workers, address=address)]
    generate_dirs = {"generate": str(out / "generate")}
    if mm:
        ran.append(jobs.run_built("dhvae", _write_jsonl(out / "prompts-mm.jsonl", mm), spec,
                                  replace(settings, repeats=protocol.mm_repeats), out=out / "generate-mm",
                                  shard_size=shard_size, workers=workers, address=address))
        generate_dirs["generate-mm"] = str(out / "generate-mm")
    generate_s = time.perf_counter() - started
    batches = plan_batches(split, protocol, seed)
    # the weights' digest, not only their path: a changed evaluator file is another embed job (and an
    # embed folder written before its rows held per-sample ranks is refused, not read without them)
    weights = weights_description(evaluator.checkpoint, evaluator.dummy_seed)
    job = {"job": "embed", "protocol": preset.name, "evaluator": {**asdict(evaluator), "weights": weights},
           "dataset": split.digest, "settings": asdict(protocol), "seed": seed, "generator": {"spec": asdict(spec),
           "settings": output_settings(settings)}}
    worker = WarmWorker(layout.embedder, evaluator, root, preset.split, generate_dirs, settings.batch_size,
                        settings.device)
    started = time.perf_counter()
    context = RunContext(str(out / "embed"), job, workers=workers, address=address, device=settings.device, unit="batch")
    done, failed, _, _ = jobs.run_shards(context, shard_batches(batches, protocol.embed_batches_per_shard), worker)
    embed_s = time.perf_counter() - started
    check_complete(out / "embed", len(batches), failed)
    if not done and all(map(jobs.ran_nothing, ran)) and (out / METRICS_JSON).is_file():
        return read_metrics(out)  # everything was committed by an earlier run: its metrics stand
    info = {
        "protocol": preset.name, "family": "dhvae", "main_metric": MAIN_METRIC, "lower_is_better": LOWER_IS_BETTER,
        "replications": protocol.replications, "protocol_settings": asdict(protocol), "seed": seed,
        "protocol_preset": preset.record(), "protocol_upstream": preset.upstream,
        "protocol_scaled": {"settings": scaled, "why": BUILTIN_WHY} if scaled else None,
        "dataset": {"root": str(root), "motions": len(split.motions), "sha256": split.digest,
                    "left_out": [list(x) for x in split.left_out]},
        "model": {"spec": asdict(spec), "settings": asdict(settings)},
        "evaluator": {**asdict(evaluator), "weights": _evaluator_weights(out / "embed")},
        "timing_s": {"generate": generate_s, "embed": embed_s},
    }
    return write_metrics(out, metric_values(out / "embed", protocol, seed), info, sample_rows(out, batches, seed))


def check_complete(embed_dir: Path, planned: int, failed: list) -> None:
    """Metrics over a partial set would be biased: every planned batch must be there."""
    present = read_results(embed_dir).num_rows
    if present == planned:
        return
    rejected = read_results(embed_dir, "rejected").to_pylist()
    reasons = "; ".join(sorted({r["reason"] for r in rejected}))[:500]
    raise IncompleteEvaluation(
        f"{planned - present} of {planned} evaluation batches are missing ({len(failed)} failed shards"
        f"{', rejected: ' + reasons if reasons else ''}); run the same command again to retry them")


def _evaluator_weights(embed_dir: Path) -> str:
    weights = read_results(embed_dir).column("evaluator_weights").unique().to_pylist()
    return ", ".join(weights)
