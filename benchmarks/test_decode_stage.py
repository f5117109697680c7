"""reconstruct's CPU stage (open, seek, decode, resample, clip, crop) as the engine runs it on Ray:
frames per second against the number of decode CPUs, the same stage in a thread of the worker, the
same spans through Ray Data's ``flat_map``, and a job whose model actor is fed by another node.

    python -m pytest benchmarks/test_decode_stage.py --benchmark-enable
    MOTIONFLEET_DECODE_CPUS=1,2,4,8,14 python -m pytest ...   (benchmarks/gpu_check.sh: the node's CPUs)

Released sizes: 640 x 360 videos at 30 fps with track files, 224-pixel crops of both people,
shards of one video each (``source.plan_shards``). Frames per second count video frames.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from benchmarks.test_socialmirror import CLIP_LEN, SETTINGS, write_corpus
from motionfleet.core.execution.ray.stream import RayStream
from motionfleet.core.io.prefetch import stream
from motionfleet.socialmirror.runner import decoded_clips
from motionfleet.socialmirror.source import plan_shards
from motionfleet.socialmirror.video import list_videos

CPUS = [int(n) for n in os.environ.get("MOTIONFLEET_DECODE_CPUS", "1,2").split(",")]
VIDEO_FRAMES = 160  # 5.3 s: 10 clips, one shard
TESTS = Path(__file__).resolve().parent.parent / "tests"


@pytest.fixture(scope="module")
def spans(tmp_path_factory):
    """Two shards (videos) per decode CPU of the largest count measured; a case on D CPUs decodes
    the first 2 D, so every case has the same work per CPU."""
    corpus = write_corpus(tmp_path_factory.mktemp("decode"), 2 * max(CPUS), VIDEO_FRAMES)
    return [shard.items[0].span for shard in plan_shards(list_videos(corpus), {}, CLIP_LEN, SETTINGS)]


def produce(span):
    return partial(decoded_clips, span, CLIP_LEN, SETTINGS, True)


def drain(clips) -> int:
    """Frames of a stream's clips (the frames each clip owns, as the rows count them)."""
    with clips:
        return sum(int(clip.owned.sum()) for clip in clips)


def record_rate(benchmark, frames: int, **extra) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"frames": frames, "frames_per_s": frames / median, "median_s": median,
                                 "iqr_s": benchmark.stats.stats.iqr, "load_average_after": os.getloadavg(), **extra})


@pytest.fixture
def local_ray(request):
    import ray

    ray.init(num_cpus=request.param, include_dashboard=False, logging_level="ERROR")
    yield request.param
    ray.shutdown()


@pytest.mark.parametrize("local_ray", CPUS, indirect=True, ids=lambda n: f"{n}cpu")
def test_decode_frames_per_second_against_decode_cpus(benchmark, spans, local_ray):
    """Two shards per CPU, each shard's stage as the engine's ``RayStream`` (a one-CPU Ray task, 4
    clips ahead), all submitted at once; Ray runs as many as there are CPUs, the consumers drain them."""
    work = spans[:2 * local_ray]

    def run() -> int:
        with ThreadPoolExecutor(len(work)) as pool:
            return sum(pool.map(lambda span: drain(RayStream(produce(span), SETTINGS.prefetch_clips)), work))

    frames = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    record_rate(benchmark, frames, decode_cpus=local_ray)


def test_decode_frames_per_second_in_a_worker_thread(benchmark, spans):
    """The same two shards as on 1 CPU above in a thread of the worker (``prefetch.stream`` outside
    Ray), one after the other, as a model actor without spare CPUs runs them: set against 1 CPU
    above, the cost of shipping clips through Ray's object store."""
    run = lambda: sum(drain(stream(produce(span), SETTINGS.prefetch_clips)) for span in spans[:2])
    frames = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    record_rate(benchmark, frames, decode_cpus=1)


def _ray_data_clips(row: dict):
    for clip in decoded_clips(row["span"], CLIP_LEN, SETTINGS, "resnet50"):
        yield {"frames": int(clip.owned.sum()), "crops": clip.crops.numpy()}


@pytest.mark.parametrize("local_ray", CPUS, indirect=True, ids=lambda n: f"{n}cpu")
def test_ray_data_flat_map_on_the_same_spans(benchmark, spans, local_ray):
    """Ray Data's streaming executor on the same shards (one-CPU ``flat_map`` tasks): the ecosystem's
    way, for the throughput comparison. Its rows come back in any order and from any task, so a
    shard's clips would have to be regrouped for a per-shard commit."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False

    def run() -> int:
        items = [{"span": span} for span in spans[:2 * local_ray]]
        ds = ray.data.from_items(items).flat_map(_ray_data_clips, num_cpus=1)
        return sum(int(batch["frames"].sum()) for batch in ds.iter_batches(batch_size=16, batch_format="numpy"))

    frames = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    record_rate(benchmark, frames, decode_cpus=local_ray)


JOB = ["--preset", "released", "--crop-size", "32", "--steps", "5", "--batch-size", "4"]
# The placement before the decode stage: one shard at a time per actor, decoded in its own thread.
DECODE_IN_THE_WORKER = ("import sys; from motionfleet.core.execution.ray import scheduler; "
                        "scheduler.shards_at_once = lambda *args: 1; from motionfleet.cli import main; "
                        "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def loopback():
    sys.path.insert(0, str(TESTS))
    from loopback_cluster import LoopbackCluster

    cluster = LoopbackCluster(Path(tempfile.mkdtemp(prefix="mf-bench-ray-")), nodes=2, pin_cores=True)
    yield cluster
    cluster.close()


@pytest.mark.parametrize("decoding", ["spare_cpu", "worker_thread"])
def test_model_actor_fed_by_another_nodes_cpu(benchmark, tmp_path, loopback, decoding):
    """A reconstruct job on a loopback cluster (a head without CPUs, two one-CPU nodes, each pinned
    to its own core, ``--workers 1``): the model actor holds one node; its shards' decoding runs on
    the other node's core, two
    shards at once in the actor (``spare_cpu``, the engine), or in a thread of the actor, sharing
    its CPU, while the other node idles (``worker_thread``, the placement before the decode stage).
    Records end-to-end FPS, the share of the worker's time in the models, and the clips decoded
    elsewhere; 64-pixel crops keep ResNet-50 near the decode cost."""
    corpus = write_corpus(tmp_path / "videos", 4, VIDEO_FRAMES)
    command = ["-m", "motionfleet"] if decoding == "spare_cpu" else ["-c", DECODE_IN_THE_WORKER]

    def job() -> dict:
        out = tmp_path / "job"
        subprocess.run([sys.executable, *command, "reconstruct", "--videos", str(corpus), "--out", str(out),
                        "--workers", "1", "--address", loopback.address, *JOB], env=loopback.env, check=True,
                       capture_output=True, timeout=900)
        return json.loads((out / "report.json").read_text())["timing"]

    start = time.perf_counter()
    timing = benchmark.pedantic(job, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update({key: timing[key] for key in (
        "frames", "clips", "fps_end_to_end", "fps_wall", "model_busy", "decode_hidden", "clips_decoded_elsewhere")})
    benchmark.extra_info.update(stages={name: s["seconds"] for name, s in timing["stages"].items()},
                                job_wall_s=time.perf_counter() - start, load_average_after=os.getloadavg())
