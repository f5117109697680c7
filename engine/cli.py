"""``motionfleet``: batch inference and benchmarking of diffusion models of human interaction.

The command line is a thin layer over the Python API (``motionfleet.generate`` etc.): each job
command and its flags are built from the family registry (``core.registry``), so a flag means the
same thing in every command and is checked the same way as an API keyword. A bad invocation is
one line ``motionfleet: error: ...`` and exit 2; a data or checkpoint error one line and exit 1;
Ctrl-C exit 130, SIGTERM (Kubernetes, Slurm, ``ray job stop``) the same clean stop with exit 143
(a rerun resumes).
"""

from __future__ import annotations

import argparse
import sys

from motionfleet.core.options import Option, UsageError, file_option, float_option, int_option

EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 1, 130, 143  # 128 + SIGINT / SIGTERM
PROG = "motionfleet"
EXIT_STATUS = f"""exit status:
  0    every shard committed
  {EXIT_DATA}    shards failed after their retries, the job stopped (disk, cluster), or a data / checkpoint error
  {EXIT_USAGE}    a bad invocation
  {EXIT_INTERRUPTED}  Ctrl-C: committed shards are kept, the same command resumes
  {EXIT_TERMINATED}  SIGTERM (Kubernetes, Slurm, ray job stop): the same clean stop as Ctrl-C"""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are ``UsageError`` (one line, exit 2), defaults shown in help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # --guidance must not silently mean --guidance-scale
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog.removeprefix(PROG).strip() + ': ' if self.prog != PROG else ''}{message}")


def add_option(parser, option: Option) -> None:
    """One flag from an Option: values stay text here and are parsed and checked with the rest."""
    default = "off" if option.switch else "none" if option.default is None else option.default
    text = option.help if "default" in option.help else f"{option.help} (default: {default})"
    if option.switch:
        parser.add_argument(option.flag, dest=option.name, action="store_true", default=None, help=text)
        return
    metavar = "{" + ",".join(map(str, option.choices)) + "}" if option.choices else (option.metavar or "TEXT")
    parser.add_argument(option.flag, dest=option.name, default=None, metavar=metavar, help=text)


def add_verbose(parser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="show third-party output (warnings, "
                        "download and loading bars) (default: quiet)")


# --- job commands, one per family ----------------------------------------------------------


def job_parser(sub, command: str) -> None:
    from motionfleet.core import jobs, registry

    family = registry.get(command)
    p = sub.add_parser(command, help=family.summary, description=family.summary,
                       epilog=f"example:\n  {family.example}")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="job folder, a path or a URI (s3://, gs://, hdfs://, file://): job.json, results/, rejected/, "
                        "commits/, report.json (required)")
    if family.demo:
        source = p.add_mutually_exclusive_group(required=True)
        add_option(source, family.inputs)
        source.add_argument("--demo", action="store_true", help="built-in synthetic inputs instead (default: off)")
    else:
        add_option(p, family.inputs)
    for option in jobs.engine_options(family) + family.options + jobs.RUN_OPTIONS:
        add_option(p, option)
    add_verbose(p)
    p.set_defaults(handler=run_job, family=family)


def run_job(args, argv: list[str]) -> int:
    from motionfleet import api
    from motionfleet.core import failures, jobs

    family = args.family
    settings = {o.name: getattr(args, o.name) for o in jobs.engine_options(family) + family.options + jobs.RUN_OPTIONS}
    report = api.run(family.command, getattr(args, family.inputs.name), out=args.out,
                     demo=getattr(args, "demo", False), command_line=[PROG, *argv], **settings)
    if report is None:
        print(f"nothing to do: every shard in {args.out} is already committed")
        return 0
    print("\n".join(family.report_lines(report)))
    print(f"results: {args.out}/results  rejected: {args.out}/rejected  report: {args.out}/report.json")
    failed = failures.read_all(args.out)
    if report["shards"]["failed"] and failed:
        print(f"{PROG}: error: {failures.summary_line(args.out, failed)}", file=sys.stderr)
        return EXIT_DATA
    if report["rows"]["results"] == 0 and report["rows"]["rejected"] > 0:
        print(f"{PROG}: error: every input was rejected; the reasons are in {args.out}/rejected", file=sys.stderr)
        return EXIT_DATA
    return 0


# --- export --------------------------------------------------------------------------------


EXPORT_OPTIONS = (
    int_option("dummy_seed", 0, "seed of the dummy weights", low=0),
    int_option("opset", 23, "ONNX opset", low=18),
    int_option("loop_steps", None, "dhvae: also export the whole DDIM loop unrolled for this many steps", low=1),
    float_option("guidance_scale", 3.5, "guidance scale baked into the whole-loop graph", low=0.0),
)


def export_parser(sub) -> None:
    from motionfleet.core import registry
    from motionfleet.core.graphs import GRAPH_PRECISIONS

    p = sub.add_parser("export", help="model -> ONNX graphs (one denoiser step per graph, batch dynamic)",
                       description="model -> ONNX graphs (one denoiser step per graph, batch dynamic)",
                       epilog="example:\n  motionfleet export --family dhvae --preset tiny --out graphs/")
    add_option(p, Option("family", None, "which model", choices=tuple(registry.FAMILIES)))
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the .onnx files (required)")
    add_option(p, Option("checkpoint", None, "model folder or released checkpoint; none: dummy weights",
                         metavar="PATH"))
    add_option(p, Option("preset", None, "model size for dummy weights (default: the family's)"))
    add_option(p, Option("precision", "fp32", "fp16: fp16 weights and arithmetic, fp32 inputs and outputs",
                         choices=GRAPH_PRECISIONS))
    for option in EXPORT_OPTIONS:
        add_option(p, option)
    add_verbose(p)
    p.set_defaults(handler=run_export)


def run_export(args, argv: list[str]) -> int:
    from motionfleet.core import registry
    from motionfleet.core.graphs import GRAPH_PRECISIONS
    from motionfleet.core.options import existing_path
    from motionfleet.export.onnx import export_family

    if args.family is None:
        raise UsageError("export: the following arguments are required: --family")
    family = registry.get(Option("family", None, "", choices=tuple(registry.FAMILIES)).parse(args.family))
    preset = Option("preset", family.default_preset, "", choices=family.presets).value(args.preset)
    checkpoint = Option("checkpoint", None, "", checks=(existing_path,)).value(args.checkpoint)
    precision = Option("precision", "fp32", "", choices=GRAPH_PRECISIONS).value(args.precision)
    v = {o.name: o.value(getattr(args, o.name)) for o in EXPORT_OPTIONS}
    if v["loop_steps"] and family.name != "dhvae":
        raise UsageError("--loop-steps: the whole-loop graph exists for dhvae only")
    paths = export_family(family.name, args.out, checkpoint, preset, v["dummy_seed"],
                          precision, v["loop_steps"], v["guidance_scale"], v["opset"],
                          progress=lambda name: print(f"exporting {name} ...", file=sys.stderr, flush=True))
    for path in paths:
        print(path)
    return 0


# --- bench, render, report ------------------------------------------------------------------


# Commands whose flags and work live in their own module (``add_arguments(parser)``, ``main(args)``).
DELEGATED = {
    "bench": ("motionfleet.bench", "latency / throughput per family, backend and batch size -> JSON, PNG, table; "
                                   "--compare A.json B.json"),
    "render": ("motionfleet.render", "selected result rows of a job -> short MP4 videos"),
    "report": ("motionfleet.html_report", "one static HTML page for a job folder (no server, no network)"),
}


def delegated_parser(sub, command: str) -> None:
    import importlib

    module, text = DELEGATED[command]
    p = sub.add_parser(command, help=text, description=text)
    importlib.import_module(module).add_arguments(p)
    add_verbose(p)
    p.set_defaults(handler=lambda args, argv: importlib.import_module(module).main(args))


# --- evaluate and leaderboard ---------------------------------------------------------------


EVALUATE_FAMILIES = ("dhvae", "scorehoi", "socialmirror")


def evaluate_options(name: str = "dhvae") -> tuple[Option, ...]:
    """The protocol's job settings (model, sampler, engine), the run's, and the protocol's own."""
    from motionfleet.core import jobs, registry

    family = registry.get(name)
    run = tuple(o for o in jobs.RUN_OPTIONS if o.name in ("workers", "address", "shard_size"))
    if name != "dhvae":
        job = tuple(o for o in jobs.engine_options(family) + family.options if o.name != "control")
        replications = int_option("replications", 1 if name == "scorehoi" else 2,
                                  "scorehoi: 1 (its sampler draws no noise); socialmirror: seeded reconstructions", low=1)
        return job + (replications,) + run
    from motionfleet.evaluation import protocols

    generation = tuple(o for o in jobs.engine_options(family) + family.options if o.name not in ("repeats", "num_frames"))
    default = protocols.DEFAULT[name]
    preset = protocols.load(name, default)

    def size(option: str, text: str, low: int) -> Option:  # a flag that overrides the --protocol preset's value
        return int_option(option, None, f"{text} (default: the --protocol preset's; {default}: {preset.settings[option]})",
                          low=low)

    protocol = (
        Option("protocol", default, f"published protocol whose settings are the defaults below ({name}/protocols/"
               "<name>.toml: each with the public file and line it follows)", choices=protocols.names(name)),
        size("replications", "replications", 1),
        size("match_batch", "R-precision matching batch", 1),
        size("diversity_pairs", "Diversity pairs", 1),
        size("mm_texts", "MModality texts (0: no MModality)", 0),
        size("mm_repeats", "MModality generations per text", 1),
        size("mm_pairs", "MModality pairs per text", 1),
        file_option("evaluator_checkpoint", "InterCLIP's released interclip.ckpt (Lightning); none: seeded dummy "
                    "weights"),
        Option("evaluator_preset", None, f"InterCLIP size for dummy weights (default: the --protocol preset's; "
               f"{default}: {preset.evaluator['preset']})", choices=("official", "tiny")),
        file_option("evaluator_vocab", "another CLIP merges file (default: OpenAI's bpe_simple_vocab_16e6.txt.gz, shipped)"),
    )
    return generation + protocol + run


DATASET_OPTION = file_option("dataset", "dhvae: an InterHuman-layout folder; scorehoi: a refine Parquet with gt_* "
                             "columns; socialmirror: a folder with videos/ and ground_truth.parquet (README: evaluate); "
                             "none: a synthetic or demo set")


def evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="a family's evaluation protocol: generate, then metrics over replications "
                       "-> OUT/metrics.json and metrics.parquet",
                       description="a family's evaluation protocol: generate, then metrics over replications",
                       epilog="example:\n  motionfleet evaluate --family dhvae --preset tiny --out runs/eval")
    p.add_argument("--family", required=True, choices=EVALUATE_FAMILIES, help="which protocol (required); each family "
                   "takes its job command's flags (--help of generate / refine / reconstruct)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the jobs and the metrics (required)")
    add_option(p, DATASET_OPTION)
    seen = set()
    for family in EVALUATE_FAMILIES:
        for option in evaluate_options(family):
            if option.name not in seen:
                seen.add(option.name)
                add_option(p, option)
    add_verbose(p)
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args, argv: list[str]) -> int:
    from motionfleet.core.jobs import resolve_device
    from motionfleet.evaluation.api import evaluate
    from motionfleet.evaluation.results import summary_lines

    options = evaluate_options(args.family)
    known = {o.name for o in options}
    stray = [f"--{name.replace('_', '-')}" for family in EVALUATE_FAMILIES for name in (o.name for o in evaluate_options(family))
             if name not in known and getattr(args, name, None) is not None]
    if stray:
        raise UsageError(f"{', '.join(sorted(set(stray)))}: not a setting of {args.family}'s protocol")
    given = {o.name: o.value(getattr(args, o.name)) for o in options if getattr(args, o.name) is not None}
    given["device"] = resolve_device(given.get("device", "auto"))
    workers, address = given.pop("workers", 1), given.pop("address", None)
    body = evaluate(args.family, args.out, args.dataset, workers, address, **given)
    print("\n".join(summary_lines(body)))
    print(f"metrics: {args.out}/metrics.json and {args.out}/metrics.parquet")
    return 0


def leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="several models through one protocol -> OUT/leaderboard.parquet and .md",
                       description="several models through one protocol -> OUT/leaderboard.parquet and .md",
                       epilog="example:\n  motionfleet leaderboard models.toml --out runs/board")
    p.add_argument("config", help="TOML file: protocol, [protocol_settings], [[entry]] (README: leaderboard)")
    p.add_argument("--out", required=True, help="folder for every entry's evaluation and the table (required)")
    add_verbose(p)
    p.set_defaults(handler=run_leaderboard)


def run_leaderboard(args, argv: list[str]) -> int:
    from motionfleet.evaluation.leaderboard import run

    result = run(args.config, args.out)
    print(result["markdown"])
    print(f"table: {args.out}/leaderboard.parquet and {args.out}/leaderboard.md")
    return 0


# --- verify ---------------------------------------------------------------------------------


def verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a job folder fully: every committed file present, its size, sha256 "
                       "and rows", description="check a job folder fully: every committed file present, its size, "
                       "sha256 and rows", epilog="example:\n  motionfleet verify runs/gen --repair")
    p.add_argument("folder", help="job folder, a path or a URI")
    p.add_argument("--repair", action="store_true", help="uncommit damaged shards, so that rerunning the job "
                   "computes them again (default: off)")
    add_verbose(p)
    p.set_defaults(handler=run_verify)


def run_verify(args, argv: list[str]) -> int:
    from motionfleet.core.sink import verify_folder

    found = verify_folder(args.folder, repair=args.repair)
    for shard_id, problems in found["damaged"].items():
        print(f"damaged {shard_id}: {'; '.join(problems)}" + ("  (uncommitted)" if args.repair else ""))
    print(f"{found['shards']} committed shards, {found['rows']} rows, {found['rejected']} rejected; "
          f"{len(found['damaged'])} damaged; {len(found['uncommitted_files'])} files of uncommitted attempts")
    if found["damaged"] and not args.repair:
        print("rerun with --repair, then rerun the job to compute the damaged shards again")
    return EXIT_DATA if found["damaged"] else 0


# --- main ----------------------------------------------------------------------------------


def build_parser() -> Parser:
    from motionfleet import __version__
    from motionfleet.core import registry

    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1], epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in registry.commands():
        job_parser(sub, command)
    for make_parser in (export_parser, evaluate_parser, leaderboard_parser, verify_parser):
        make_parser(sub)
    for command in DELEGATED:
        delegated_parser(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from motionfleet.core.interrupts import sigterm_interrupts

    with sigterm_interrupts():  # SIGTERM stops the job like Ctrl-C: the same cleanup below
        return run_command(sys.argv[1:] if argv is None else list(argv))


def run_command(argv: list[str]) -> int:
    from motionfleet.core.errors import exit_code_and_message
    from motionfleet.core.interrupts import terminated
    from motionfleet.core.quiet import quiet_third_party

    try:
        args = build_parser().parse_args(argv)
        with quiet_third_party(verbose=args.verbose):
            return args.handler(args, argv)
    except KeyboardInterrupt:
        print(f"\n{PROG}: {'terminated (SIGTERM)' if terminated() else 'interrupted'}: committed shards are kept; "
              f"run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every error a user can cause becomes one line
        code, message = exit_code_and_message(err)
        if code is None:
            raise
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return code
    finally:
        from motionfleet.core.executors import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
