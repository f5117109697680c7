"""``motionfleet`` command line."""

from __future__ import annotations

import argparse
import sys

from motionfleet.engine.errors import MissingFile, UnsafeCheckpoint
from motionfleet.engine.sink import JobMismatch


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="job folder: results/, rejected/, manifest.json, report.json")
    p.add_argument("--checkpoint", help="model folder (model.safetensors + config.json) or a released checkpoint; "
                                        "default: seeded dummy weights")
    p.add_argument("--dummy-seed", type=int, default=0, help="seed of the dummy weights (default 0)")
    p.add_argument("--seed", type=int, default=0, help="job seed; each sample's noise comes from (seed, id, repeat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="Ray runner actors; 0 runs in this process without Ray")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--backend", default="torch", help="denoiser backend (torch)")
    p.add_argument("--precision", default="fp32", choices=["fp32"])
    p.add_argument("--address", help="join an existing Ray cluster at this address instead of starting one")
    p.add_argument("--shard-size", type=int, default=256, help="work items per shard (unit of commit and retry)")


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
    from motionfleet.engine import jobs
    from motionfleet.engine.generate import GenerateSettings, ModelSpec
    from motionfleet.engine.report import summary_lines

    spec = ModelSpec(preset=args.preset, checkpoint=args.checkpoint, dummy_seed=args.dummy_seed,
                     text_encoder=args.text_encoder, text_encoder_weights=args.text_encoder_weights)
    settings = GenerateSettings(steps=args.steps, guidance=args.guidance, eta=args.eta, seed=args.seed,
                                batch_size=args.batch_size, default_frames=args.num_frames,
                                device=args.device, backend=args.backend, precision=args.precision)
    report = jobs.generate(args.out, spec, settings, prompts=args.prompts, repeats=args.repeats,
                           shard_size=args.shard_size, workers=args.workers, address=args.address)
    if report is None:
        print(f"nothing to do: every shard in {args.out} is already committed")
        return 0
    print("\n".join(summary_lines(report)))
    print(f"results: {args.out}/results  rejected: {args.out}/rejected  report: {args.out}/report.json")
    return 0


COMMANDS = {"generate": (_generate_parser, _run_generate)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="motionfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for make_parser, _ in COMMANDS.values():
        make_parser(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (MissingFile, UnsafeCheckpoint, JobMismatch, FileNotFoundError, ValueError) as err:
        print(f"motionfleet: error: {err}", file=sys.stderr)
        return 2
    finally:
        from motionfleet.engine.executors import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
