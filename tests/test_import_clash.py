"""The repository's top-level ``kernels/`` and ``export/`` never shadow packages of the same name.

Both are folders of ``motionfleet`` (``motionfleet.kernels``, ``motionfleet.export``) kept at the
top level for readers. Without an ``__init__.py`` they are at most namespace portions, which
Python takes only when no regular package of that name is on the path: Hugging Face's ``kernels``
(imported by transformers 5, under sentence-transformers) wins even when the repository root is on
``sys.path``, as it is for ``python -m pytest`` and for every Ray worker started from the root
(Ray adds the driver's working folder to its workers' path).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0")


def python_at_root(code: str) -> subprocess.CompletedProcess:
    """``python -c`` from the repository root: the root is the first entry of ``sys.path``."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)


def test_top_level_folders_are_not_regular_packages():
    for name in ("kernels", "export"):
        assert (ROOT / name).is_dir() and not (ROOT / name / "__init__.py").exists(), name


def test_sentence_transformers_imports_from_the_repository_root():
    result = python_at_root("import sentence_transformers, importlib.util as u; "
                            "print(u.find_spec('kernels').origin)")
    assert result.returncode == 0, result.stderr[-2000:]
    origin = result.stdout.strip()
    assert origin != "None" and not origin.startswith(str(ROOT) + os.sep + "kernels"), origin


def test_engine_subpackages_import_from_anywhere():
    result = python_at_root("import motionfleet.kernels.ddim, motionfleet.export.onnx, motionfleet.kernels.guidance")
    assert result.returncode == 0, result.stderr[-2000:]


def test_one_prompt_job_from_the_repository_root_on_a_ray_worker(tmp_path):
    """A Ray actor's path starts with the driver's working folder, here the repository root: the
    engine's own ``kernels`` must still resolve to ``motionfleet.kernels``."""
    prompts = tmp_path / "one.txt"
    prompts.write_text("two people shake hands\n")
    out = tmp_path / "job"
    result = subprocess.run(["motionfleet", "generate", "--prompts", str(prompts), "--out", str(out), "--preset", "tiny",
                             "--steps", "2", "--workers", "1"], cwd=ROOT, capture_output=True, text=True, env=ENV,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["timing"]["sentences"] == 1 and report["workers"]["ran"] == 1
