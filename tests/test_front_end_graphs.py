"""The front end's graphs: ``motionfleet export --family socialmirror`` writes the detector's and HMR 2.0's
graphs from reconstruct's weights flags, and ``reconstruct --onnx-dir`` runs them (and the denoiser's)
from that folder instead of exporting them into the cache. Tiny seeded YOLOX and HMR 2.0 in their
released layouts (tests/test_reconstruct_tracking.py), one short video of three moving figures."""

import json
import shutil

import onnx
import pytest
from onnx.external_data_helper import set_external_data
from test_reconstruct_tracking import SIZE, keyed_rows, write_detector, write_hmr2

from motionfleet import cli
from motionfleet.common.weights import weights_description
from motionfleet.common.yolox import load_yolox
from motionfleet.core.errors import DataError
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.graphs import read_metadata, state_dict_sha256
from motionfleet.demo.videos import write_tracking_video
from motionfleet.socialmirror import hmr2
from motionfleet.socialmirror.detect import DetectorGraph

pytestmark = pytest.mark.usefixtures("one_thread", "no_progress")  # one_thread: tests/conftest.py

DETECTOR_SIZE = (96, 128)
GRAPHS = ("socialmirror-denoiser-fp32.onnx", "yolox-detector-fp32.onnx", "hmr2-estimator-fp32.onnx")
JOB = ["--preset", "small", "--crop-size", "32", "--max-frame-size", "128", "--steps", "2", "--seed", "3",
       "--batch-size", "2", "--workers", "0", "--detector-size", "96x128"]


@pytest.fixture
def no_progress(monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_PROGRESS", "0")  # stderr holds the error line alone


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("front_end")
    (folder / "videos").mkdir()
    write_tracking_video(folder / "videos" / "scene.mp4", num_frames=16, size=SIZE)
    return {"videos": folder / "videos", "detector": write_detector(folder / "bytetrack_test.pth.tar", score_bias=8.0),
            "estimator": write_hmr2(folder / "epoch=35-step=1000000.ckpt", seed=1)}


def export(out, *flags) -> int:
    return cli.main(["export", "--family", "socialmirror", "--preset", "small", "--out", str(out), *flags])


@pytest.fixture(scope="module")
def graphs(files, tmp_path_factory):
    """The folder ``export`` writes with both front-end files."""
    out = tmp_path_factory.mktemp("graphs")
    assert export(out, "--detector-weights", files["detector"], "--detector-size", "96x128",
                  "--estimator-weights", files["estimator"]) == 0
    return out


def front_end_flags(files) -> list[str]:
    return ["--detector-weights", files["detector"], "--estimator-weights", files["estimator"]]


def test_export_writes_the_front_end_graphs_from_the_jobs_loaders(graphs, files):
    assert sorted(p.name for p in graphs.iterdir()) == sorted(GRAPHS)
    detector = read_metadata(graphs / "yolox-detector-fp32.onnx")
    assert detector["weights_sha256"] == state_dict_sha256(DetectorGraph(load_yolox(files["detector"]), DETECTOR_SIZE))
    assert detector["weights"] == weights_description(files["detector"], 0)
    assert '"test_size": [96, 128]' in detector["config"]
    estimator = read_metadata(graphs / "hmr2-estimator-fp32.onnx")
    from motionfleet.socialmirror.hmr2_estimate import HMR2Graph
    model = hmr2.load_model(files["estimator"], "tiny")  # the preset feeding the small denoiser
    assert estimator["weights_sha256"] == state_dict_sha256(HMR2Graph(model))


def test_a_job_runs_the_graphs_of_onnx_dir_and_gives_the_cache_jobs_rows(tmp_path, graphs, files, monkeypatch):
    """Without --onnx-dir the job exports its three graphs into the cache; with it, the same rows and
    not one graph written into the (other, empty) cache."""
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    argv = ["reconstruct", "--videos", str(files["videos"]), *JOB, "--backend", "onnxruntime", *front_end_flags(files)]
    assert cli.main([*argv, "--out", str(tmp_path / "cached")]) == 0
    assert sorted(p.name for p in (tmp_path / "cache" / "onnx").rglob("*.onnx")) == sorted(GRAPHS)
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache-dir"))
    assert cli.main([*argv, "--out", str(tmp_path / "dir"), "--onnx-dir", str(graphs)]) == 0
    assert not list((tmp_path / "cache-dir").rglob("*.onnx"))  # every graph came from --onnx-dir
    rows = {name: keyed_rows(tmp_path / name) for name in ("cached", "dir")}
    assert rows["cached"] and rows["dir"] == rows["cached"]
    assert {(r["estimates"], r["tracks_source"]) for r in rows["dir"].values()} == {("hmr2", "detector")}
    assert json.loads((tmp_path / "dir" / "report.json").read_text())["settings"]["onnx_dir"] == str(graphs)


@pytest.mark.parametrize("graph, words", [
    ("yolox-detector-fp32.onnx", "yolox-detector-fp32.onnx was exported from other weights"),
    ("hmr2-estimator-fp32.onnx", "hmr2-estimator-fp32.onnx was exported from other weights"),
])
def test_a_graph_from_other_weights_in_onnx_dir_is_one_line(tmp_path, graphs, files, capsys, graph, words):
    other = tmp_path / "other"
    flag = {"yolox": ["--detector-weights", write_detector(tmp_path / "other.pth.tar", score_bias=7.0), "--detector-size", "96x128"],
            "hmr2": ["--estimator-weights", write_hmr2(tmp_path / "other.ckpt", seed=2)]}[graph.split("-")[0]]
    assert export(other, *flag) == 0
    folder = tmp_path / "mixed"
    shutil.copytree(graphs, folder)
    shutil.copy(other / graph, folder / graph)
    argv = ["reconstruct", "--videos", str(files["videos"]), "--out", str(tmp_path / "job"), *JOB, "--backend", "onnxruntime",
            "--onnx-dir", str(folder), *front_end_flags(files)]
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err


@pytest.mark.parametrize("flags, code, words", [
    (["--backend", "torch", "--onnx-dir", "GRAPHS"], 2, "--onnx-dir: --backend torch runs no graph"),
    (["--backend", "onnxruntime", "--onnx-dir", "MISSING"], 2, "is not a folder"),
    (["--backend", "onnxruntime", "--onnx-dir", "VIDEO"], 2, "is not a folder"),
])
def test_a_wrong_onnx_dir_is_one_line_before_any_work(tmp_path, graphs, files, capsys, flags, code, words):
    named = {"GRAPHS": str(graphs), "MISSING": str(tmp_path / "nowhere"), "VIDEO": str(files["videos"] / "scene.mp4")}
    out = tmp_path / "out"
    argv = ["reconstruct", "--videos", str(files["videos"]), "--out", str(out), *JOB, *front_end_flags(files)]
    assert cli.main(argv + [named.get(f, f) for f in flags]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_a_missing_graph_names_the_export_that_writes_it(tmp_path, graphs):
    folder = tmp_path / "denoiser-only"
    folder.mkdir()
    shutil.copy(graphs / GRAPHS[0], folder)
    with pytest.raises(FileNotFoundError, match="write it with: motionfleet export --family socialmirror --detector-weights "
                                                "FILE --detector-size 96x128 --precision fp32"):
        backends.make_backend("onnxruntime", DetectorGraph(load_yolox(write_detector(tmp_path / "d.pth.tar", 8.0)),
                                                           DETECTOR_SIZE), onnx_dir=folder)


def test_a_graph_at_another_detector_size_is_refused_naming_it(graphs, files):
    with pytest.raises(ValueError, match=r"another config \(test_size \[96, 128\] there, \[64, 64\] here\)"):
        backends.make_backend("onnxruntime", DetectorGraph(load_yolox(files["detector"]), (64, 64)), onnx_dir=graphs)


def test_an_untrusted_graph_whose_weights_data_leaves_its_folder_is_refused(tmp_path, graphs, files):
    folder = tmp_path / "graphs"
    folder.mkdir()
    model = onnx.load(str(graphs / "yolox-detector-fp32.onnx"))
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location="../outside.bin")
    tensor.ClearField("raw_data")
    onnx.save(model, str(folder / "yolox-detector-fp32.onnx"))
    detector = DetectorGraph(load_yolox(files["detector"]), DETECTOR_SIZE)
    with pytest.raises(DataError, match=r"external weights data '../outside.bin' outside its folder"):
        backends.make_backend("onnxruntime", detector, onnx_dir=folder)
    (folder / "yolox-detector-fp32.onnx").write_bytes(b"\x00not a graph" * 10)
    with pytest.raises(DataError, match="is not a readable ONNX graph"):
        backends.make_backend("onnxruntime", detector, onnx_dir=folder)


@pytest.mark.parametrize("file", ["detector", "estimator"])
def test_export_refuses_a_front_end_file_with_the_jobs_one_line(tmp_path, files, capsys, file):
    wrong = tmp_path / "wrong.pth.tar"
    import torch
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, wrong)
    flag = f"--{file}-weights"
    job = cli.main(["reconstruct", "--videos", str(files["videos"]), "--out", str(tmp_path / "job"), *JOB, flag, str(wrong)])
    job_err = capsys.readouterr().err.strip()
    assert export(tmp_path / "graphs", flag, str(wrong)) == job == 1
    assert capsys.readouterr().err.strip() == job_err and len(job_err.splitlines()) == 1
    assert not (tmp_path / "graphs").exists()


def test_export_of_a_regression_head_or_another_familys_flag_is_a_usage_error(tmp_path, files, capsys):
    from safetensors.torch import save_file

    from motionfleet.socialmirror.initial_estimate import build_initial_estimator
    head = tmp_path / "head.safetensors"
    save_file(build_initial_estimator(48, None, 0).state_dict(), head)
    assert export(tmp_path / "a", "--estimator-weights", str(head)) == 2
    assert "runs in torch on every backend, it has no graph" in capsys.readouterr().err
    assert cli.main(["export", "--family", "dhvae", "--preset", "tiny", "--out", str(tmp_path / "b"),
                     "--detector-weights", files["detector"]]) == 2
    assert "--detector-weights: not a flag of --family dhvae's export" in capsys.readouterr().err
