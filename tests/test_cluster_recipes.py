"""cluster/ recipes checked without a cluster: the launcher YAML by Ray's own schema and
validator, the KubeRay manifests structurally against the ray.io/v1 CRD fields they use, the
Slurm script by bash's parser and for explicit resource counts."""

import copy
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from loopback_cluster import LoopbackCluster

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"

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
                    "resources": {"type": "object", "additionalProperties": False, "properties": {
                        "requests": {"type": "object", "additionalProperties": QUANTITY},
                        "limits": {"type": "object", "additionalProperties": QUANTITY}}},
                }, "additionalProperties": False}},
            "tolerations": {"type": "array"},
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
