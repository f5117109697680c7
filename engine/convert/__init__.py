"""``motionfleet convert``: a job's committed results as files animation tools open, one per sample
(``generate``: prompt id and repeat; ``refine``: sample id and variant; ``reconstruct``: video)
and person.

- ``npz``: ``refine`` / ``reconstruct``: AMASS's layout (``convert.smpl``), one file per person;
  ``generate``: the 22 joint positions and foot contacts (``convert.interhuman``).
- ``bvh``: one file per person (``convert.bvh``): SMPL's / SMPL-H's skeleton from the job's body
  model, InterHuman's 22 joints for ``generate``.
- ``gltf``: one ``.glb`` per sample, every person an animated skeleton (``convert.gltf``).

The results are read shard by shard, a batch of rows at a time (``core.sink.iter_results``); each
file is written to a temporary name and renamed, so OUT never holds half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from motionfleet.convert.bvh import bvh_text
from motionfleet.convert.gltf import glb_bytes
from motionfleet.convert.names import output_path
from motionfleet.convert.sample import Sample
from motionfleet.core.errors import DataError
from motionfleet.core.jobfolder.sink import JOB, UnrelatedFolder, read_job
from motionfleet.core.jobfolder.storage import Storage
from motionfleet.core.options import UsageError

FORMATS = ("npz", "bvh", "gltf")


def family_samples(location: str, body_models: Optional[str], motion_stats: Optional[str]) -> Iterator[Sample]:
    from motionfleet.convert import interhuman, smpl

    storage = Storage(location)
    if storage.size(JOB) is None:
        raise UnrelatedFolder(f"{location} is not a motionfleet job folder (no {JOB})")
    job = read_job(storage)["job"]
    family = job.get("family")
    for flag, value, wanted in (("--body-models", body_models, ("scorehoi", "socialmirror")),
                                ("--motion-stats", motion_stats, ("dhvae",))):
        if value is not None and family not in wanted:
            raise UsageError(f"{flag}: a {family} job has no use for it")
    readers = {"dhvae": lambda: interhuman.generate_samples(location, job, motion_stats),
               "scorehoi": lambda: smpl.refine_samples(location, job, body_models),
               "socialmirror": lambda: smpl.reconstruct_samples(location, job, body_models)}
    if family not in readers:
        raise UsageError(f"{location}: a {str(family)[:40]!r} job; convert reads generate, refine and reconstruct jobs")
    return readers[family]()


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def sample_files(sample: Sample, to: str, out: Path) -> list[tuple[Path, bytes]]:
    if to == "gltf":
        return [(output_path(out, sample.key, ".glb"), glb_bytes(sample))]
    if to == "npz":
        return [(output_path(out, sample.key, f".p{i}.npz"), npz_bytes(a)) for i, a in enumerate(sample.arrays)]
    return [(output_path(out, sample.key, f".p{i}.bvh"), bvh_text(m).encode()) for i, m in enumerate(sample.people)]


def convert(job: str, to: str, out: str, body_models: Optional[str] = None, motion_stats: Optional[str] = None,
            progress: Callable[[Path], None] = lambda path: None) -> list[Path]:
    """Write every committed sample of the job folder ``job`` as ``to`` files into ``out``; returns their paths."""
    if to not in FORMATS:
        raise UsageError(f"--to {to!r}: expected one of {', '.join(FORMATS)}")
    samples = family_samples(job, body_models, motion_stats)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in samples:
        for path, data in sample_files(sample, to, folder):
            write_atomically(path, data)
            written.append(path)
            progress(path)
    return written


# --- the command ----------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.epilog = "example:\n  motionfleet convert runs/gen --to bvh --out runs/gen-bvh --motion-stats data/interhuman"
    parser.add_argument("job", metavar="DIR", help="job folder, a path or a URI")
    parser.add_argument("--to", required=True, choices=FORMATS, help="npz: AMASS layout (SMPL / SMPL-H) or joint "
                        "positions (generate); bvh: one skeleton per person; gltf: one .glb per sample (required)")
    parser.add_argument("--out", required=True, metavar="OUT", help="folder for the files (required)")
    parser.add_argument("--body-models", metavar="DIR", default=None, help="refine / reconstruct jobs run with a "
                        "licensed body model: its folder (checked against the job's sha256) (default: none)")
    parser.add_argument("--motion-stats", metavar="DIR", default=None, help="generate jobs that wrote normalized "
                        "motions: the folder with InterHuman's global_mean.npy and global_std.npy (default: none)")


def main(args) -> int:
    written = convert(args.job, args.to, args.out, args.body_models, args.motion_stats)
    if not written:
        raise DataError(f"{args.job} has no committed results to convert")
    print(f"{len(written)} files in {args.out}")
    return 0
