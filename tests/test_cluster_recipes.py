"""cluster/ recipes checked without a cluster: the launcher YAML by Ray's own schema and
validator, the KubeRay manifests structurally against the ray.io/v1 CRD fields they use and for the
volumes and secrets their paths need, the Dockerfiles (no Docker daemon here) for what they copy and
install and the image they tag, the Slurm script by bash's parser, for explicit resource counts and
by a run against stand-ins for Slurm and Ray; and joining a token-auth cluster without its token."""

import copy
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import jsonschema
import pytest
import yaml
from loopback_cluster import LoopbackCluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"

# The ray.io/v1 CRD (KubeRay ray-operator/config/crd/bases) for the fields these manifests use.
# Unknown fields are refused here: the API server would silently prune a misspelled one.
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^[0-9.]+([KMGTPE]i?|m)?$"}]}
POD_TEMPLATE = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {
        "type": "object", "required": ["containers"],
        "properties": {
            "containers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "image"],
                "properties": {
                    "name": {"type": "string"}, "image": {"type": "string"},
                    "ports": {"type": "array", "items": {"type": "object", "required": ["containerPort"]}},
                    "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                    "envFrom": {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
                        "secretRef": {"type": "object", "required": ["name"]},
                        "configMapRef": {"type": "object", "required": ["name"]}}}},
                    "volumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
                    "resources": {"type": "object", "additionalProperties": False, "properties": {
                        "requests": {"type": "object", "additionalProperties": QUANTITY},
                        "limits": {"type": "object", "additionalProperties": QUANTITY}}},
                }, "additionalProperties": False}},
            "tolerations": {"type": "array"},
            "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        }, "additionalProperties": False}},
}
START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}  # the CRD says map[string]string
CLUSTER_SPEC = {
    "type": "object", "required": ["headGroupSpec"], "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": {"type": "object", "required": ["template"], "additionalProperties": False,
                          "properties": {"rayStartParams": START_PARAMS, "template": POD_TEMPLATE}},
        "workerGroupSpecs": {"type": "array", "items": {
            "type": "object", "required": ["groupName", "template"], "additionalProperties": False,
            "properties": {"groupName": {"type": "string"}, "replicas": {"type": "integer"},
                           "minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
                           "rayStartParams": START_PARAMS, "template": POD_TEMPLATE}}},
    },
}
RESOURCE = {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": "ray.io/v1"}, "metadata": {"type": "object", "required": ["name"]}}}
SCHEMAS = {
    "RayCluster": {**RESOURCE, "properties": {**RESOURCE["properties"], "spec": CLUSTER_SPEC}},
    "RayJob": {**RESOURCE, "properties": {**RESOURCE["properties"], "spec": {
        "type": "object", "required": ["entrypoint", "rayClusterSpec"], "additionalProperties": False,
        "properties": {"entrypoint": {"type": "string"},
                       "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                       "shutdownAfterJobFinishes": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer"},
                       "backoffLimit": {"type": "integer"}, "rayClusterSpec": CLUSTER_SPEC}}}},
}


def kuberay_manifests() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((CLUSTER / "kuberay").glob("*.yaml"))]


def test_the_launcher_config_passes_rays_own_schema_and_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert {".git", ".venv", "runs"} <= set(config["rsync_exclude"])
    misspelled = {**copy.deepcopy(config), "rsync_exlcude": config["rsync_exclude"]}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(misspelled))


def test_the_kuberay_manifests_match_the_ray_io_v1_crd_and_give_explicit_gpu_counts():
    manifests = kuberay_manifests()
    assert sorted(m["kind"] for m in manifests) == ["RayCluster", "RayJob"]
    for manifest in manifests:
        jsonschema.validate(manifest, SCHEMAS[manifest["kind"]])
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        for group in spec["workerGroupSpecs"]:
            [container] = group["template"]["spec"]["containers"]
            limits = container["resources"]["limits"]
            assert group["rayStartParams"]["num-gpus"] == str(limits["nvidia.com/gpu"])
            assert group["rayStartParams"]["num-cpus"] == str(limits["cpu"])
    broken = copy.deepcopy(manifests[0])
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # not a string: the CRD refuses it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[broken["kind"]])


def test_the_slurm_script_parses_and_starts_ray_with_explicit_counts_and_a_bounded_wait():
    script = (CLUSTER / "slurm-ray.sh").read_text()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(CLUSTER / "slurm-ray.sh")], check=True)
    starts = [line for line in script.splitlines() if re.search(r"\bray start\b", line)]
    assert len(starts) == 2 and all("--num-cpus=" in s and "--num-gpus=" in s for s in starts)
    poll = re.search(r"^wait_for_nodes\(\) \{\n(.*?)^\}", script, re.M | re.S).group(1)
    assert "deadline" in poll and "ray.nodes()" in poll  # polls until the nodes are alive, bounded
    assert script.count("sleep ") == poll.count("sleep ")  # no fixed sleeps in place of polling


def test_the_cluster_readme_submits_jobs_with_ray_job_submit():
    readme = (CLUSTER / "README.md").read_text()
    assert "ray job submit" in readme and not re.search(r"\bray submit\b", readme)



@pytest.fixture(scope="module")
def token_cluster():
    temp_dir = tempfile.mkdtemp(prefix="mf-test-ray-")  # short: Ray's socket paths must fit in 107 bytes
    head = LoopbackCluster(Path(temp_dir), nodes=0)  # token auth on, a token of its own
    yield head
    head.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("auth", ["no token", "its token without RAY_AUTH_MODE", "a wrong token"])
def test_joining_a_token_cluster_without_its_token_is_one_line_naming_the_fix(tmp_path, token_cluster, auth):
    env = {k: v for k, v in token_cluster.env.items() if not k.startswith("RAY_AUTH_")}
    env |= {"no token": {}, "its token without RAY_AUTH_MODE": {"RAY_AUTH_TOKEN": token_cluster.env["RAY_AUTH_TOKEN"]},
            "a wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}}[auth]
    result = subprocess.run([sys.executable, "-m", "motionfleet", "generate", "--out", str(tmp_path / "o"), "--preset", "tiny",
                             "--address", token_cluster.address, "--workers", "1"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"motionfleet: error: the Ray cluster at {token_cluster.address} refused this process's auth token: export "
        f"RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"]


# --- the image the manifests run, and the installs every recipe makes -------------------------

README_TORCH = re.search(r"pip install (torch==\S+) -e", (ROOT / "README.md").read_text()).group(1)
DOCKERFILES = {"cpu": CLUSTER / "Dockerfile", "cuda": CLUSTER / "Dockerfile.cuda"}


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def manifest_images() -> set[str]:
    return {c["image"] for m in kuberay_manifests() for group in pod_groups(m) for c in group["template"]["spec"]["containers"]}


def pod_groups(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_the_dockerfiles_copy_what_pip_install_needs_and_install_as_the_readme_does(kind):
    steps = dockerfile(DOCKERFILES[kind])
    assert steps[0][0] == "FROM" and ":" in steps[0][1] and not steps[0][1].endswith(":latest")
    copied = [word for op, args in steps if op == "COPY" for word in args.split()[:-1]]
    assert copied and all((ROOT / path).exists() for path in copied), copied
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {project["project"]["readme"], "pyproject.toml", *project["project"]["license-files"],
              *project["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= set(copied), f"pip install . needs {sorted(needed - set(copied))}"
    runs = [args for op, args in steps if op == "RUN"]
    index = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu128"}[kind]
    assert f"pip install {README_TORCH} --index-url {index}" in runs  # the README's pin, from PyTorch's index
    assert index in (ROOT / "docs" / "install.md").read_text()  # the install page names the index
    [install] = [i for i, (op, args) in enumerate(steps) if op == "RUN" and re.search(r'pip install "\.\[', args)]
    assert install > max(i for i, (op, _) in enumerate(steps) if op == "COPY")  # installs what was copied
    extras = re.search(r'"\.\[([a-z,]+)\]"', steps[install][1]).group(1).split(",")
    assert {"cpu": "cpu", "cuda": "gpu"}[kind] in extras and "cluster" in extras
    rays = {m["spec"].get("rayClusterSpec", m["spec"])["rayVersion"] for m in kuberay_manifests()}
    assert len(rays) == 1 and re.search(r'"ray==([0-9.]+)"', steps[install][1]).group(1) in rays


def test_the_kuberay_manifests_run_the_image_the_cuda_dockerfile_tags():
    tags = {kind: re.search(r"docker build -f cluster/\S+ -t (\S+) \.", path.read_text()).group(1)
            for kind, path in DOCKERFILES.items()}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert manifest_images() == {tags["cuda"]} and tags["cuda"].endswith(f":{version}-cuda12")
    assert tags["cpu"].endswith(f":{version}-cpu")
    readme = (CLUSTER / "README.md").read_text()
    assert all(f"docker build -f {path.relative_to(ROOT)} -t {tags[kind]} ." in readme for kind, path in DOCKERFILES.items())


def test_the_rayjob_mounts_the_paths_it_names_and_every_secret_it_uses_is_created_in_its_header():
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        manifest, text = yaml.safe_load(path.read_text()), path.read_text()
        created = set(re.findall(r"^#\s+kubectl create secret generic (\S+)", text, re.M))
        entrypoint = manifest["spec"].get("entrypoint", "")
        local_paths = [p for p in re.findall(r"(?:^|\s)(/\S+)", entrypoint)]
        for group in pod_groups(manifest):
            pod = group["template"]["spec"]
            volumes = {v["name"] for v in pod.get("volumes", [])}
            for container in pod["containers"]:
                used = {ref["secretRef"]["name"] for ref in container.get("envFrom", [])} | {
                    e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
                assert used <= created, f"{path.name}: secrets {sorted(used - created)} are not created in its header"
                assert "motionfleet-s3" in used  # s3:// inputs and --out need the object store's credentials
                mounts = container.get("volumeMounts", [])
                assert {m["name"] for m in mounts} <= volumes
                for local in local_paths:  # the driver (head) and the workers both read it
                    assert any(local.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (path.name, local)
    assert "--checkpoint /models/" in yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())["spec"]["entrypoint"]


def test_the_launcher_pins_torch_to_the_readmes_and_installs_the_cluster_extra():
    setup = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())["setup_commands"]
    torch = [c for c in setup if re.search(r"\btorch\b", c)]
    assert torch == [f"python3 -m pip install {README_TORCH} --index-url https://download.pytorch.org/whl/cu128"]
    [install] = [c for c in setup if "/opt/motionfleet[" in c]
    assert "cluster" in re.search(r"/opt/motionfleet\[([a-z,]+)\]", install).group(1).split(",")


def test_the_cluster_readme_exports_the_auth_mode_with_the_token():
    readme = (CLUSTER / "README.md").read_text()
    exports = [line for line in readme.splitlines() if "RAY_AUTH_TOKEN=" in line]
    assert exports and all("RAY_AUTH_MODE=token" in line for line in exports)


# --- the Slurm script, run against stand-ins for Slurm and Ray --------------------------------

STANDINS = {
    "scontrol": 'echo node-a; echo node-b',  # scontrol show hostnames: two nodes
    "srun": 'while [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done; exec "$@"',  # run here
    "hostname": 'echo 10.0.0.1',
    "ray": 'echo "ray $*" >> "$CALLS"',
    "python3": 'if [[ $1 == - ]]; then cat > /dev/null; echo 2; else exec "$REAL_PYTHON" "$@"; fi',  # 2 nodes alive
    "motionfleet": 'echo "motionfleet $*" >> "$CALLS"; exit 3',
}


def slurm_run(tmp_path, venv: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "REAL_PYTHON": sys.executable, "CALLS": str(tmp_path / "calls"),
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_CPUS_PER_TASK": "8", "SLURM_GPUS_ON_NODE": "2"}
    if venv is not None:
        env["VENV"] = venv
    return subprocess.run(["bash", str(CLUSTER / "slurm-ray.sh"), "generate", "--out", "/shared/x"], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_slurm_script_activates_venv_and_runs_motionfleet_on_the_cluster_it_started(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, body in STANDINS.items():
        (venv / "bin" / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (venv / "bin" / name).chmod(0o755)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')

    result = slurm_run(tmp_path, str(venv))
    assert result.returncode == 3, result.stderr  # motionfleet's status is the script's
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "motionfleet generate --out /shared/x --address 10.0.0.1:6379" in calls
    assert sum(c.startswith("ray start") for c in calls) == 2
    assert calls.index("motionfleet generate --out /shared/x --address 10.0.0.1:6379") < calls.index("ray stop --force")

    missing = slurm_run(tmp_path, None)  # no VENV and nothing on PATH: one line naming the fix
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "slurm-ray: motionfleet is not on PATH: set VENV=/path/to/venv (motionfleet installed, on storage every node sees) "
        "or activate it before sbatch"]
    wrong = slurm_run(tmp_path, str(tmp_path / "nowhere"))
    assert wrong.returncode == 2 and "has no bin/activate" in wrong.stderr
