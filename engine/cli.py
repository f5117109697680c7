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
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial

from motionfleet.core.options import Option, UsageError, dummy_seed_option, float_option, int_option

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
    text = option.help if "(default" in option.help else f"{option.help} (default: {default})"
    if option.switch:
        parser.add_argument(option.flag, dest=option.name, action="store_true", default=None, help=text)
        return
    metavar = "{" + ",".join(map(str, option.choices)) + "}" if option.choices else (option.metavar or "TEXT")
    parser.add_argument(option.flag, dest=option.name, default=None, metavar=metavar, help=text)


def add_verbose(parser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="show third-party output (warnings, "
                        "logs and progress bars) (default: quiet)")


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
    from motionfleet.core import jobs
    from motionfleet.core.jobfolder import failures
    from motionfleet.core.runtime.stopwatch import process_started_at

    family = args.family
    settings = {o.name: getattr(args, o.name) for o in jobs.engine_options(family) + family.options + jobs.RUN_OPTIONS}
    report = api.run(family.command, getattr(args, family.inputs.name), out=args.out,
                     demo=getattr(args, "demo", False), command_line=[PROG, *argv],
                     process_started_at=process_started_at(), **settings)
    if jobs.ran_nothing(report):
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
    dummy_seed_option(),
    int_option("opset", 23, "ONNX opset", low=18, high=23),  # torch's exporter's highest; at 26-28 onnx's checker refused its Attention node
    int_option("loop_steps", None, "dhvae: also export the whole DDIM loop unrolled for this many steps", low=1),
    float_option("guidance_scale", 3.5, "guidance scale baked into the whole-loop graph", low=0.0),
)


def export_parser(sub) -> None:
    from motionfleet.core import registry
    from motionfleet.core.runtime.graphs import GRAPH_PRECISIONS

    text = ("model -> ONNX graphs (one denoiser step per graph, batch dynamic; socialmirror: also its front end's "
            "with --detector-weights / --estimator-weights, for reconstruct --onnx-dir)")
    p = sub.add_parser("export", help=text, description=text,
                       epilog="example:\n  motionfleet export --family dhvae --preset tiny --out graphs/")
    p.add_argument("--family", required=True, metavar="{" + ",".join(registry.FAMILIES) + "}",
                   help="which model (required)")  # the value is checked in run_export, one line like every value
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the .onnx files (required)")
    add_option(p, Option("checkpoint", None, "model folder or released checkpoint; none: dummy weights",
                         metavar="PATH"))
    add_option(p, Option("preset", None, "model size for dummy weights (default: the family's)"))
    add_option(p, Option("precision", "fp32", "fp16: fp16 weights and arithmetic, fp32 inputs and outputs",
                         choices=GRAPH_PRECISIONS))
    for option in EXPORT_OPTIONS:
        add_option(p, option)
    for family in registry.registering("export_options"):
        group = p.add_argument_group(f"{family.name} only (as {family.command} takes them)")
        for option in family.export_options:
            add_option(group, option)
    add_verbose(p)
    p.set_defaults(handler=run_export)


def run_export(args, argv: list[str]) -> int:
    from motionfleet.core import registry
    from motionfleet.core.options import existing_path
    from motionfleet.core.runtime.graphs import GRAPH_PRECISIONS
    from motionfleet.export.onnx import export_family

    family = registry.get(Option("family", None, "", choices=tuple(registry.FAMILIES)).parse(args.family))
    preset = Option("preset", family.default_preset, "", choices=family.presets).value(args.preset)
    checkpoint = Option("checkpoint", None, "", checks=(existing_path,)).value(args.checkpoint)
    precision = Option("precision", "fp32", "", choices=GRAPH_PRECISIONS).value(args.precision)
    v = {o.name: o.value(getattr(args, o.name)) for o in EXPORT_OPTIONS}
    if v["loop_steps"] and family.name != "dhvae":
        raise UsageError("--loop-steps: the whole-loop graph exists for dhvae only")
    if v["loop_steps"]:
        check_loop_steps(v["loop_steps"])
    paths = export_family(family.name, args.out, checkpoint, preset, v["dummy_seed"],
                          precision, v["loop_steps"], v["guidance_scale"], v["opset"],
                          progress=lambda name: print(f"exporting {name} ...", file=sys.stderr, flush=True),
                          options=family_export_values(family, args))
    for path in paths:
        print(path)
    return 0


def check_loop_steps(steps: int) -> None:
    """The whole-loop graph unrolls the default schedule's steps: at most ``ddim.max_steps`` (999)."""
    from motionfleet.sampling import ddim

    most = ddim.max_steps(ddim.DDIMConfig())
    if steps > most:
        raise UsageError(f"--loop-steps: must be <= {most}, got {steps}")


def family_export_values(family, args) -> dict:
    """The checked values of ``family``'s own export flags; UsageError for another family's flag given."""
    from motionfleet.core import registry

    stray = [o.flag for other in registry.registering("export_options") if other is not family
             for o in other.export_options if getattr(args, o.name, None) is not None]
    if stray:
        raise UsageError(f"{', '.join(sorted(stray))}: not a flag of --family {family.name}'s export")
    return {o.name: o.value(getattr(args, o.name)) for o in family.export_options}


# --- bench, render, report ------------------------------------------------------------------


# Commands whose flags and work live in their own module (``add_arguments(parser)``, ``main(args)``).
DELEGATED = {
    "bench": ("motionfleet.bench", "latency / throughput per family, backend and batch size -> JSON, PNG, table; "
                                   "--compare A.json B.json"),
    "render": ("motionfleet.render", "selected result rows of a job -> short MP4 videos"),
    "report": ("motionfleet.html_report", "one static HTML page for a job folder (no server, no network)"),
    "convert": ("motionfleet.convert", "a job's results -> .npz (AMASS layout or joint positions), .bvh or .glb "
                                       "files, one per sample (and person)"),
}


def delegated_parser(sub, command: str) -> None:
    import importlib

    module, text = DELEGATED[command]
    p = sub.add_parser(command, help=text, description=text)
    importlib.import_module(module).add_arguments(p)
    add_verbose(p)
    p.set_defaults(handler=lambda args, argv: importlib.import_module(module).main(args))


# --- evaluate and leaderboard ---------------------------------------------------------------


def evaluate_parser(sub) -> None:
    from motionfleet.evaluation.api import dataset_option, protocols

    families = tuple(protocols())
    p = sub.add_parser("evaluate", help="a family's evaluation protocol: generate, then metrics over replications "
                       "-> OUT/metrics.json and metrics.parquet",
                       description="a family's evaluation protocol: generate, then metrics over replications; "
                       "each flag below is listed under the protocols that take it",
                       epilog="example:\n  motionfleet evaluate --family dhvae --preset tiny --out runs/eval\n"
                              "  motionfleet evaluate --family scorehoi --preset small --sampler-preset fast --out runs/eval-hoi")
    p.add_argument("--family", required=True, choices=families, help="which protocol (required); each family "
                   "takes its job command's flags (--help of generate / refine / reconstruct)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the jobs and the metrics (required)")
    add_option(p, dataset_option())
    p.add_argument("--inspect", metavar="ID", help="print one generated sample's record from OUT/samples.parquet "
                   "(text, seed, R-precision rank, distance, where its row lives) instead of evaluating; "
                   "dhvae only (default: none)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option, taking in protocol_flags(families):
        title = "every protocol" if len(taking) == len(families) else " and ".join(taking) + " only"
        add_option(groups.get(title) or groups.setdefault(title, p.add_argument_group(title)), option)
    add_verbose(p)
    p.set_defaults(handler=run_evaluate)


def protocol_flags(families: tuple[str, ...]) -> list[tuple[Option, tuple[str, ...]]]:
    """Each protocol setting once, with the families that take it; where they differ, its help,
    default and choices name each family's."""
    from motionfleet.evaluation.api import protocol_options

    per_name: dict[str, dict[str, Option]] = {}
    for family in families:
        for option in protocol_options(family):
            per_name.setdefault(option.name, {})[family] = option
    return [(merged_option(by_family), tuple(by_family)) for by_family in per_name.values()]


def default_text(option: Option) -> str:
    """An option's default as its help names it: a size that the --protocol preset decides has none of its own."""
    if option.default is None:
        return "its --protocol preset's" if "--protocol preset" in option.help else "none"
    return str(option.default)


def merged_option(by_family: dict[str, Option]) -> Option:
    first, *_ = options = list(by_family.values())
    if all(o.help == first.help and o.default == first.default and o.choices == first.choices for o in options):
        return first
    helps = {o.help for o in options}
    text = first.help if len(helps) == 1 else "; ".join(f"{family}: {o.help}" for family, o in by_family.items())
    defaults = {o.default for o in options}
    if len(defaults) > 1:
        text += " (default: " + ", ".join(f"{family} {default_text(o)}" for family, o in by_family.items()) + ")"
    # a family that takes any value (no choices) takes any value through the shared flag too
    listed = [o.choices for o in options if o.choices is not None]
    choices = tuple(dict.fromkeys(c for cs in listed for c in cs)) if len(listed) == len(options) else None
    return Option(first.name, first.default, text, first.type, choices, switch=first.switch, metavar=first.metavar)


def run_evaluate(args, argv: list[str]) -> int:
    from motionfleet.evaluation.api import evaluate, protocol_options, protocols
    from motionfleet.evaluation.results import record_lines, sample_record, summary_lines

    if args.inspect is not None:
        print("\n".join(record_lines(sample_record(args.out, args.inspect))))
        return 0
    known = {o.name for o in protocol_options(args.family)}
    stray = [option.flag for option, _ in protocol_flags(tuple(protocols()))
             if option.name not in known and getattr(args, option.name, None) is not None]
    if stray:
        raise UsageError(f"{', '.join(sorted(stray))}: not a setting of {args.family}'s protocol")
    given = {name: getattr(args, name) for name in known if getattr(args, name) is not None}
    body = evaluate(args.family, args.out, args.dataset, **given)
    print("\n".join(summary_lines(body)))
    print(f"metrics: {args.out}/metrics.json and {args.out}/metrics.parquet")
    return 0


def leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="several models through one protocol -> OUT/leaderboard.parquet, .md and .json",
                       description="several models through one protocol -> OUT/leaderboard.parquet, .md and .json "
                                   "(motionfleet report OUT: the board as a page)",
                       epilog="example:\n  motionfleet leaderboard models.toml --out runs/board")
    p.add_argument("config", help="TOML file: protocol, [protocol_settings], [[entry]] with optional "
                   "[entry.published], [real.published] (docs/evaluate.md)")
    p.add_argument("--out", required=True, help="folder for every entry's evaluation and the table (required)")
    add_verbose(p)
    p.set_defaults(handler=run_leaderboard)


def run_leaderboard(args, argv: list[str]) -> int:
    from motionfleet.evaluation.leaderboard import run

    result = run(args.config, args.out)
    print(result["markdown"])
    print(f"table: {args.out}/leaderboard.parquet, {args.out}/leaderboard.md and {args.out}/leaderboard.json; "
          f"as a page: motionfleet report {args.out}")
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
    from motionfleet.core.jobfolder.sink import verify_folder

    found = verify_folder(args.folder, repair=args.repair)
    for shard_id, problems in found["damaged"].items():
        print(f"damaged {shard_id}: {'; '.join(problems)}" + ("  (uncommitted)" if args.repair else ""))
    repaired = len(found["damaged"]) if args.repair else 0
    if repaired:
        found = verify_folder(args.folder)  # what stays committed, checked again
    print(f"{found['shards']} committed shards, {found['rows']} rows, {found['rejected']} rejected; "
          f"{len(found['damaged'])} damaged; {len(found['uncommitted_files'])} files of uncommitted attempts")
    if repaired:
        print(f"{repaired} damaged shard{'s' if repaired > 1 else ''} uncommitted: rerun the job to compute "
              f"{'them' if repaired > 1 else 'it'} again")
    if found["damaged"]:
        print("rerun with --repair, then rerun the job to compute the damaged shards again")
    return EXIT_DATA if found["damaged"] else 0


# --- main ----------------------------------------------------------------------------------


def command_parsers() -> dict[str, Callable]:
    """command -> the function adding its parser, in the order ``--help`` lists them."""
    from motionfleet.core import registry

    makers: dict[str, Callable] = {command: partial(job_parser, command=command) for command in registry.commands()}
    makers.update(export=export_parser, evaluate=evaluate_parser, leaderboard=leaderboard_parser, verify=verify_parser)
    return makers | {command: partial(delegated_parser, command=command) for command in DELEGATED}


def build_parser(argv: Sequence[str] = ()) -> Parser:
    """The command line's parser; with ``argv`` naming a command, that command's alone: a family's
    parser imports its models, and a job should not pay for the other families' imports."""
    from motionfleet import __version__

    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1], epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    makers = command_parsers()
    named = argv[0] if argv and argv[0] in makers else None
    for command, make_parser in makers.items():
        if named in (None, command):
            make_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from motionfleet.core.io.interrupts import sigterm_interrupts

    with sigterm_interrupts():  # SIGTERM stops the job like Ctrl-C: the same cleanup below
        return run_command(sys.argv[1:] if argv is None else list(argv))


def run_command(argv: list[str]) -> int:
    from motionfleet.core.exit_codes import exit_code_and_message
    from motionfleet.core.io.interrupts import terminated
    from motionfleet.core.io.quiet import quiet_third_party

    try:
        args = build_parser(argv).parse_args(argv)
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
        from motionfleet.core.execution import shutdown

        shutdown()


def console() -> None:
    """The ``motionfleet`` command: ``main``, then the process ends without the interpreter's
    teardown. By then every file the command wrote is committed and closed and Ray is shut down
    (``run_command``); the teardown would only collect torch's objects module by module, memory
    the OS takes back anyway: 0.8 s after a generate job, 0.4 s after a bare ``import torch``, on
    the 2-core CPU (three runs each). Not in ``main``, which a long-lived caller calls."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None where the shell closed it (``>&-``)
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``): nothing left to say there
            pass
    os._exit(0 if code is None else code)  # sys.exit's reading of None


if __name__ == "__main__":
    console()
