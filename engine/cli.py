"""``motionfleet`` command line."""

from __future__ import annotations

import argparse
import sys

from motionfleet.core.backends import BACKENDS, PRECISIONS, BackendUnavailable, check_backend
from motionfleet.core.errors import ClusterUnreachable, MissingFile, UnsafeCheckpoint
from motionfleet.core.executors import NoWorkers, OutputUnwritable
from motionfleet.core.sink import FolderRefused
from motionfleet.evaluation.results import IncompleteEvaluation


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="job folder, a path or a URI (s3://, gs://, hdfs://, file://): "
                                                "job.json, results/, rejected/, commits/, report.json")
    p.add_argument("--checkpoint", help="model folder (model.safetensors + config.json) or a released checkpoint; "
                                        "default: seeded dummy weights")
    p.add_argument("--dummy-seed", type=int, default=0, help="seed of the dummy weights (default 0)")
    p.add_argument("--seed", type=int, default=0, help="job seed; each sample's noise comes from (seed, id, repeat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="Ray runner actors; 0 runs in this process without Ray")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="what runs the denoiser and decoder")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp16 / bf16 only where the device computes in them natively")
    p.add_argument("--address", help="join an existing Ray cluster at this address instead of starting one")
    p.add_argument("--shard-size", type=int, default=256, help="work items per shard (unit of commit and retry)")
    p.add_argument("--shard-timeout", type=float, help="seconds a worker may spend on one shard before it is killed and "
                                                       "the shard retried (default: 5x the slowest shard so far, >= 60)")
    p.add_argument("--shard-attempts", type=int, default=3, help="tries of a failing shard before it is recorded in "
                                                                 "OUT/failed/ and the job goes on (default 3)")


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="text prompts -> two-person motion (dhvae)")
    _add_common(p)
    p.add_argument("--prompts", help=".txt (one per line), .jsonl or .parquet; default: the built-in set")
    p.add_argument("--preset", default="official", help="dhvae preset for dummy weights: official, paper, tiny")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.5, help="classifier-free guidance scale w")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--num-frames", type=int, default=120, help="frames for prompts that give none (max 300)")
    p.add_argument("--text-encoder", default="minilm", choices=["minilm", "clip", "precomputed"])
    p.add_argument("--text-encoder-weights", help="open_clip ViT-L-14 weights file (clip) or a saved MiniLM projection")


def _run_generate(args) -> int:
    from motionfleet.core import jobs
    from motionfleet.core.report import summary_lines
    from motionfleet.dhvae.runner import GenerateSettings, ModelSpec

    spec = ModelSpec(preset=args.preset, checkpoint=args.checkpoint, dummy_seed=args.dummy_seed,
                     text_encoder=args.text_encoder, text_encoder_weights=args.text_encoder_weights)
    settings = GenerateSettings(steps=args.steps, guidance=args.guidance, eta=args.eta, seed=args.seed,
                                batch_size=args.batch_size, default_frames=args.num_frames,
                                device=args.device, backend=args.backend, precision=args.precision)
    report = jobs.generate(args.out, spec, settings, prompts=args.prompts, repeats=args.repeats,
                           shard_size=args.shard_size, workers=args.workers, address=args.address,
                           policy=_policy(args))
    return _print_report(args.out, report, summary_lines)


def _policy(args):
    from motionfleet.core.executors import FaultPolicy

    if args.shard_timeout is not None and not args.shard_timeout > 0:
        raise ValueError(f"--shard-timeout must be > 0 seconds, got {args.shard_timeout}")
    if args.shard_attempts < 1:
        raise ValueError(f"--shard-attempts must be >= 1, got {args.shard_attempts}")
    return FaultPolicy(attempts=args.shard_attempts, shard_timeout_s=args.shard_timeout)


def _print_report(out: str, report, lines) -> int:
    """Print ``lines(report)`` and where the job wrote, or that a rerun found nothing to do; 1 when
    shards failed after their retries (the summary says where their errors are)."""
    from motionfleet.core import failures

    if report is None:
        print(f"nothing to do: every shard in {out} is already committed")
        return 0
    print("\n".join(lines(report)))
    print(f"results: {out}/results  rejected: {out}/rejected  report: {out}/report.json")
    failed = failures.read_all(out)
    if report.get("shards_failed") and failed:
        print(f"motionfleet: error: {failures.summary_line(out, failed)}", file=sys.stderr)
        return 1
    return 0


def _reconstruct_parser(sub) -> None:
    p = sub.add_parser("reconstruct", help="video corpus -> two-person SMPL motion (socialmirror)")
    _add_common(p)
    p.set_defaults(batch_size=4, shard_size=64)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", help="folder of videos, .txt or .parquet manifest (path, track_path, caption), "
                                         "or one video file")
    source.add_argument("--demo", action="store_true", help="write a few synthetic two-person videos to "
                                                            "OUT/demo_videos and reconstruct them")
    p.add_argument("--preset", default="released", help="socialmirror preset for dummy weights: released, small")
    p.add_argument("--steps", type=int, default=5, help="DDIM steps over CloseInt's 100 train steps")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--sigma", type=float, default=1.0, help="noise scale of the start x_T ~ N(x_init, sigma^2)")
    p.add_argument("--guidance-scale", type=float, default=0.0, help="geometric guidance rho (0: off; try 0.05)")
    p.add_argument("--guidance-penetration", type=float, default=1.0, help="weight of the joint penetration term")
    p.add_argument("--guidance-aux", type=float, default=1.0, help="weight of the auxiliary 3D joint term")
    p.add_argument("--joint-radius", type=float, default=0.08, help="joint sphere radius (m) of the penetration term")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second the videos are resampled to")
    p.add_argument("--stride", type=int, default=16, help="frames between clip starts (16: no overlap)")
    p.add_argument("--crop-size", type=int, default=224, help="person crop side for ResNet-50")
    p.add_argument("--max-frame-size", type=int, default=640, help="cap on the longer frame side before cropping")
    p.add_argument("--prefetch-clips", type=int, default=4, help="decoded clips queued ahead of the models")
    p.add_argument("--backbone-weights", help="torchvision-format ResNet-50 weights file")
    p.add_argument("--estimator-weights", help="feature projection + regression head weights file")
    p.add_argument("--body-models", help="folder with smpl/SMPL_NEUTRAL.pkl (default: a cached synthetic SMPL)")
    p.add_argument("--estimates", help="upstream Parquet of per-frame image features / initial estimates / aux joints")
    p.add_argument("--text-encoder", default="minilm", choices=["minilm", "clip"], help="encoder of captions")
    p.add_argument("--text-encoder-weights", help="open_clip ViT-L-14 weights file (clip) or a saved MiniLM projection")


def _run_reconstruct(args) -> int:
    from motionfleet.core import jobs
    from motionfleet.core.report import stage_lines
    from motionfleet.socialmirror.runner import ReconstructSettings, ReconstructSpec

    spec = ReconstructSpec(preset=args.preset, checkpoint=args.checkpoint, dummy_seed=args.dummy_seed,
                           backbone_weights=args.backbone_weights, estimator_weights=args.estimator_weights,
                           body_models=args.body_models, estimates=args.estimates, text_encoder=args.text_encoder,
                           text_encoder_weights=args.text_encoder_weights)
    settings = ReconstructSettings(
        target_fps=args.fps, stride=args.stride, crop_size=args.crop_size, max_frame_size=args.max_frame_size,
        clips_per_shard=args.shard_size, steps=args.steps, eta=args.eta, sigma=args.sigma,
        guidance_scale=args.guidance_scale, guidance_penetration=args.guidance_penetration,
        guidance_aux=args.guidance_aux, joint_radius=args.joint_radius, seed=args.seed, batch_size=args.batch_size,
        prefetch_clips=args.prefetch_clips, device=args.device, backend=args.backend, precision=args.precision)
    report = jobs.reconstruct(args.out, args.videos, spec, settings, workers=args.workers, address=args.address,
                              demo=args.demo, policy=_policy(args))
    return _print_report(args.out, report, stage_lines)


def _refine_parser(sub) -> None:
    from motionfleet.scorehoi.runner import PRESETS, RefineSettings

    defaults = RefineSettings()
    p = sub.add_parser("refine", help="initial human-object estimates -> score-guided refinement (scorehoi)")
    _add_common(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--estimates", help="Parquet of initial estimates, one row per image (README: refine)")
    source.add_argument("--demo", action="store_true", help="built-in synthetic scenes with penetration and missed "
                                                            "contact; implies --control")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="sampler settings: paper (N 10, tau 50, step 2), public (N 20, tau 50, step 5), fast (N 2)")
    p.add_argument("--rounds", type=int, help="refinement rounds N (overrides the preset)")
    p.add_argument("--tau", type=int, help="inversion noise level, of 1000 steps (overrides the preset)")
    p.add_argument("--stride", type=int, help="DDIM step size (overrides the preset)")
    p.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale, help="rho of eq. 6; 0: off")
    p.add_argument("--control", action="store_true", help="also refine every row with guidance off (rho 0)")
    p.add_argument("--model", default="released", choices=["released", "small"], help="denoiser size")
    p.add_argument("--unfolded", action="store_true", help="run the unfolded reference denoiser (same function, "
                                                           "about 12x the FLOPs) instead of the folded one")
    p.add_argument("--body-models", help="folder with the licensed smplh/SMPLH_NEUTRAL.npz (default: a synthetic "
                                         "stand-in written once to $MOTIONFLEET_CACHE/body_models)")
    p.add_argument("--contact-distance", type=float, default=defaults.contact_distance,
                   help="the default contact predictor marks human points this close to the object (m)")
    p.add_argument("--image-encoder-weights", help="torchvision-format ResNet-50 weights for image_path rows")


def _run_refine(args) -> int:
    from motionfleet.core import jobs
    from motionfleet.core.report import fps_lines
    from motionfleet.scorehoi.runner import RefineSettings, model_spec, quality_lines

    overrides = {k: getattr(args, k) for k in ("rounds", "tau", "stride") if getattr(args, k) is not None}
    settings = RefineSettings.from_preset(
        args.preset, **overrides, guidance_scale=args.guidance_scale, contact_distance=args.contact_distance,
        folded=not args.unfolded, batch_size=args.batch_size, device=args.device, backend=args.backend,
        precision=args.precision)
    spec = model_spec(args.model, args.checkpoint, args.dummy_seed, args.body_models, args.image_encoder_weights)
    report = jobs.refine(args.out, None if args.demo else args.estimates, spec, settings,
                         control=args.control or args.demo, shard_size=args.shard_size, workers=args.workers,
                         address=args.address, policy=_policy(args))
    return _print_report(args.out, report, lambda r: fps_lines(r) + quality_lines(r["quality"]))


def _export_parser(sub) -> None:
    from motionfleet.export.onnx import FAMILIES, GRAPH_PRECISIONS, OPSET

    p = sub.add_parser("export", help="model -> ONNX graphs (one denoiser step per graph, batch dynamic)")
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--checkpoint", help="model folder or released checkpoint; default: seeded dummy weights")
    p.add_argument("--preset", help="preset for dummy weights (dhvae: official, paper, tiny; scorehoi and "
                                    "socialmirror: released, small)")
    p.add_argument("--dummy-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for the .onnx files")
    p.add_argument("--precision", default="fp32", choices=GRAPH_PRECISIONS,
                   help="fp16: fp16 weights and arithmetic, fp32 inputs and outputs")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--loop-steps", type=int, help="dhvae: also export the whole DDIM loop unrolled for this many steps")
    p.add_argument("--guidance", type=float, default=3.5, help="guidance scale baked into the whole-loop graph")


def _run_export(args) -> int:
    from motionfleet.export.onnx import export_family

    paths = export_family(args.family, args.out, args.checkpoint, args.preset, args.dummy_seed, args.precision,
                          args.loop_steps, args.guidance, args.opset)
    for path in paths:
        print(path)
    return 0


def _comma_list(kind):
    return lambda text: tuple(kind(item) for item in text.split(",") if item)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="AITS per backend and batch size -> JSON, PNG plot and a table")
    p.add_argument("--family", default="dhvae", choices=["dhvae"])
    p.add_argument("--preset", default="official")
    p.add_argument("--backends", type=_comma_list(str), default=("torch", "torch-compile", "onnxruntime"))
    p.add_argument("--batch-sizes", type=_comma_list(int), default=(1, 8, 64, 256))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num-frames", type=int, default=120)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per backend and batch size (median quoted)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--whole-loop-batches", type=_comma_list(int), default=(),
                   help="also time the unrolled whole-loop ONNX graph against per-step calls at these batch sizes")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON and PNG")


def _run_bench(args) -> int:
    from motionfleet.bench import BenchSettings, run_bench, summary

    for backend in args.backends:
        check_backend(backend, args.precision, args.device)
    settings = BenchSettings(backends=args.backends, batch_sizes=args.batch_sizes, preset=args.preset,
                             steps=args.steps, frames=args.num_frames, repeats=args.repeats, device=args.device,
                             precision=args.precision, whole_loop_batches=args.whole_loop_batches)
    body = run_bench(settings, args.out)
    print("\n".join(summary(body)))
    print(f"written: {args.out}/dhvae_backends_{args.device}.json and .png")
    return 0


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="a family's evaluation protocol: generate/reconstruct, then metrics over "
                                        "replications -> OUT/metrics.json and metrics.parquet")
    p.add_argument("--family", required=True, choices=["dhvae"])
    p.add_argument("--dataset", help="dhvae: an InterHuman-layout folder (README: evaluate); default: a synthetic set "
                                     "written to OUT/dataset")
    _add_common(p)
    p.set_defaults(batch_size=None, shard_size=None, backend=None, precision=None)
    p.add_argument("--replications", type=int, help="10 (DHVAE's config, the default) or 20 (InterGen's)")
    p.add_argument("--preset", help="dhvae preset for dummy weights: official, paper, tiny")
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--text-encoder", choices=["minilm", "clip", "precomputed"])
    p.add_argument("--text-encoder-weights")
    p.add_argument("--evaluator-checkpoint", help="InterCLIP's released interclip.ckpt (Lightning); default: seeded "
                                                  "dummy weights")
    p.add_argument("--evaluator-preset", help="InterCLIP size for dummy weights: official, tiny")
    p.add_argument("--evaluator-vocab", help="CLIP's bpe_simple_vocab_16e6.txt.gz (found in an installed open_clip)")
    p.add_argument("--match-batch", type=int, help="R-precision matching batch (96)")
    p.add_argument("--diversity-pairs", type=int, help="Diversity pairs (300)")
    p.add_argument("--mm-texts", type=int, help="MModality texts (100; 0: no MModality)")
    p.add_argument("--mm-repeats", type=int, help="MModality generations per text (30)")
    p.add_argument("--mm-pairs", type=int, help="MModality pairs per text (10)")


EVALUATE_OPTIONS = ("checkpoint", "dummy_seed", "seed", "batch_size", "device", "backend", "precision", "shard_size",
                    "replications", "preset", "steps", "guidance", "text_encoder", "text_encoder_weights",
                    "evaluator_checkpoint", "evaluator_preset", "evaluator_vocab", "match_batch", "diversity_pairs",
                    "mm_texts", "mm_repeats", "mm_pairs")


def _run_evaluate(args) -> int:
    from motionfleet.evaluation.api import evaluate
    from motionfleet.evaluation.results import summary_lines

    options = {name: getattr(args, name) for name in EVALUATE_OPTIONS if getattr(args, name) is not None}
    body = evaluate(args.family, args.out, args.dataset, args.workers, args.address, **options)
    print("\n".join(summary_lines(body)))
    print(f"metrics: {args.out}/metrics.json and {args.out}/metrics.parquet")
    return 0


def _leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="several models through one protocol -> OUT/leaderboard.parquet and .md")
    p.add_argument("config", help="TOML file: protocol, [protocol_settings], [[entry]] (README: leaderboard)")
    p.add_argument("--out", required=True, help="folder for every entry's evaluation and the table")


def _run_leaderboard(args) -> int:
    from motionfleet.evaluation.leaderboard import run

    result = run(args.config, args.out)
    print(result["markdown"])
    print(f"table: {args.out}/leaderboard.parquet and {args.out}/leaderboard.md")
    return 0
def _verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a job folder fully: every committed file present, its size, "
                                      "sha256 and rows")
    p.add_argument("folder", help="job folder, a path or a URI")
    p.add_argument("--repair", action="store_true", help="uncommit damaged shards, so that rerunning the job "
                                                         "computes them again")


def _run_verify(args) -> int:
    from motionfleet.core.sink import verify_folder

    found = verify_folder(args.folder, repair=args.repair)
    for shard_id, problems in found["damaged"].items():
        print(f"damaged {shard_id}: {'; '.join(problems)}" + ("  (uncommitted)" if args.repair else ""))
    print(f"{found['shards']} committed shards, {found['rows']} rows, {found['rejected']} rejected; "
          f"{len(found['damaged'])} damaged; {len(found['uncommitted_files'])} files of uncommitted attempts")
    if found["damaged"] and not args.repair:
        print("rerun with --repair, then rerun the job to compute the damaged shards again")
    return 1 if found["damaged"] else 0


COMMANDS = {
    "generate": (_generate_parser, _run_generate),
    "refine": (_refine_parser, _run_refine),
    "reconstruct": (_reconstruct_parser, _run_reconstruct),
    "export": (_export_parser, _run_export),
    "bench": (_bench_parser, _run_bench),
    "evaluate": (_evaluate_parser, _run_evaluate),
    "leaderboard": (_leaderboard_parser, _run_leaderboard),
    "verify": (_verify_parser, _run_verify),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="motionfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for make_parser, _ in COMMANDS.values():
        make_parser(sub)
    args = parser.parse_args(argv)
    try:
        if vars(args).get("backend"):  # a job command: refuse a backend this machine cannot run, before any work
            check_backend(args.backend, args.precision or "fp32", args.device)
        return COMMANDS[args.command][1](args)
    except (MissingFile, UnsafeCheckpoint, FolderRefused, FileNotFoundError, ValueError, BackendUnavailable,
            ClusterUnreachable) as err:
        print(f"motionfleet: error: {err}", file=sys.stderr)
        return 2
    except (OutputUnwritable, NoWorkers, IncompleteEvaluation) as err:  # the job stopped; what it committed stays
        print(f"motionfleet: error: {err}", file=sys.stderr)
        return 1
    finally:
        from motionfleet.core.executors import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
