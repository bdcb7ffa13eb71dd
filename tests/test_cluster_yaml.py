"""cluster.yaml (Ray cluster launcher, AWS) and docs/kuberay-rayjob.yaml are valid and run dermgen on GPUs.

cluster.yaml is checked against the JSON schema shipped inside the installed `ray` package and each
node_config against botocore's EC2 RunInstances input model, so a typo fails here, not at `ray up`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
RAYJOB_YAML = REPO_ROOT / "docs" / "kuberay-rayjob.yaml"
# vCPUs and GPUs of the instance types cluster.yaml uses or suggests.
INSTANCE_SHAPES = {
    "m6i.xlarge": (4, 0),
    "m6i.2xlarge": (8, 0),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.12xlarge": (48, 4),
    "g6.xlarge": (4, 1),
    "g6e.xlarge": (4, 1),
    "p4d.24xlarge": (96, 8),
}


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _worker_types(cluster: dict) -> dict[str, dict]:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def test_validates_against_rays_schema(cluster):
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):  # the schema really constrains node types
        jsonschema.validate(bad, schema)


def test_ray_accepts_it_after_filling_defaults(cluster):
    util = pytest.importorskip("ray.autoscaler._private.util")
    config = util.prepare_config(copy.deepcopy(cluster))
    util.validate_config(config)
    assert config["provider"]["type"] == "aws"


def test_head_is_cpu_only_and_on_demand(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    itype = head["node_config"]["InstanceType"]
    assert INSTANCE_SHAPES[itype][1] == 0, f"head {itype} should be a CPU instance"
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0  # generator actors never land on the head
    assert "InstanceMarketOptions" not in head["node_config"]  # losing the head loses the driver
    assert head.get("max_workers", 0) == 0 and head.get("min_workers", 0) == 0


def test_gpu_workers_autoscale_and_advertise_gpus(cluster):
    workers = _worker_types(cluster)
    assert workers
    for name, node in workers.items():
        itype = node["node_config"]["InstanceType"]
        cpus, gpus = INSTANCE_SHAPES[itype]
        assert gpus >= 1, f"{name}: {itype} has no GPU"
        assert node["resources"] == {"CPU": cpus, "GPU": gpus}, f"{name}: resources do not match {itype}"
        assert node["min_workers"] == 0 < node["max_workers"] <= cluster["max_workers"]
        market = node["node_config"].get("InstanceMarketOptions")
        assert market is None or market["MarketType"] == "spot"
        assert "IamInstanceProfile" in node["node_config"], f"{name}: workers write to S3 and need a role"
    assert cluster["idle_timeout_minutes"] > 0


def test_node_configs_are_valid_ec2_run_instances_parameters(cluster):
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    for name, node in cluster["available_node_types"].items():
        params = dict(node["node_config"], MinCount=1, MaxCount=1)
        report = ParamValidator().validate(params, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        disk = node["node_config"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
        assert disk >= 100, f"{name}: {disk} GiB is too small for the CUDA image, torch and the model"


def test_setup_installs_the_project_with_cuda_torch_on_workers(cluster):
    (remote, local), *_ = cluster["file_mounts"].items()
    assert (REPO_ROOT / local).resolve() == REPO_ROOT
    head_cmds = cluster["setup_commands"] + cluster["head_setup_commands"]
    worker_cmds = cluster["setup_commands"] + cluster["worker_setup_commands"]
    for cmds, torch_index in ((head_cmds, r"whl/cpu"), (worker_cmds, r"whl/cu\d+")):
        torch_at = next(
            i for i, c in enumerate(cmds) if re.search(rf"pip install .*torch .*{torch_index}", c)
        )
        install_at = next(i for i, c in enumerate(cmds) if re.search(rf'pip install .*-e "?{remote}', c))
        assert torch_at < install_at  # the right torch build first, then the project keeps it
    images = cluster["docker"]
    assert images["head_image"].split(":")[0] == images["worker_image"].split(":")[0] == "rayproject/ray"
    head_tag, worker_tag = images["head_image"].split(":")[1], images["worker_image"].split(":")[1]
    assert worker_tag.endswith("-gpu") and head_tag.rsplit("-", 1)[0] == worker_tag.rsplit("-", 1)[0]
    assert {"outputs/**", "**/.venv"} <= set(cluster["rsync_exclude"])


def test_kuberay_rayjob_runs_the_6k_job_on_autoscaling_gpus():
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert re.search(r"\bpython jobs/generate_6k\.py\b.*--output s3://", spec["entrypoint"])
    assert "--device cuda" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    (container,) = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    head_image = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert container["image"] == head_image  # same code and Ray everywhere
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["DERMGEN_ACTOR_START_TIMEOUT"]
