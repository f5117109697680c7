"""The refine driver's peak memory on large shared inputs (issue 23: one of them drove the driver to
23 GB before the machine killed it).

    python -m pytest benchmarks/test_refine_memory.py --benchmark-enable

Each case is ``motionfleet refine --workers 0`` in a process of its own over 17 rows: one plain
row and 16 sharing one large file beside the estimates, a 12 MB mesh (an icosphere of 327,680
faces: its signed-distance grid) or an 8192 x 8192 PNG (the documented maximum). The record holds
the process's peak resident set and its wall time; every row must be refined.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trimesh

from motionfleet.core.jobfolder.sink import read_results
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.demo.scenes import demo_scenes

RUN = """import json, sys
from motionfleet import cli
from motionfleet.core.execution.worker import peak_rss_mb
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "peak_rss_mb": peak_rss_mb()}))"""  # VmHWM: ru_maxrss would hold pytest's peak


def shared_file(folder, case: str) -> tuple[str, dict]:
    """The large file, and the columns of a row that uses it."""
    if case == "mesh":
        trimesh.creation.icosphere(subdivisions=7, radius=0.12).export(folder / "big.obj")
        return "big.obj", {"object": "big.obj"}
    from PIL import Image

    image = np.zeros((8192, 8192, 3), np.uint8)
    image[:100, :100] = 255
    Image.fromarray(image).save(folder / "big.png")
    return "big.png", {"image_features": None, "image_path": "big.png"}


@pytest.mark.parametrize("case", ["mesh", "png"])
def test_sixteen_rows_sharing_one_large_file(benchmark, tmp_path, case):
    write_synthetic_body_model(tmp_path / "body", "smplh")
    good = {"id": "plain", **dict(demo_scenes(32).records[0].values), "image_path": None}
    name, columns = shared_file(tmp_path, case)
    rows = [good] + [{**good, "id": f"shared{i}", **columns} for i in range(16)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "estimates.parquet")
    runs = iter(range(10))

    def refine():
        out = tmp_path / f"out-{next(runs)}"
        result = subprocess.run([sys.executable, "-c", RUN, "refine", "--estimates", str(tmp_path / "estimates.parquet"),
                                 "--out", str(out), "--preset", "small", "--body-models", str(tmp_path / "body"),
                                 "--rounds", "2", "--tau", "10", "--ddim-stride", "5", "--batch-size", "4", "--workers", "0"],
                                capture_output=True, text=True, env={**os.environ, "MOTIONFLEET_PROGRESS": "0",
                                                                     "MOTIONFLEET_CACHE": str(tmp_path / "cache")})
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        assert measured["code"] == 0, result.stderr[-2000:]
        assert read_results(out).num_rows == 17
        return measured["peak_rss_mb"]

    peak = benchmark.pedantic(refine, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update({"case": case, "file": name, "file_mb": (tmp_path / name).stat().st_size / 2**20,
                                 "peak_rss_mb": peak, "load_average_after": os.getloadavg()})
