"""The cluster manifests, workflows and Dockerfile, checked without a cluster and without
starting Ray: each object against its schema (cluster/validate.py), then what must agree
across files (images, versions, settings, the three copies of the retraining job)."""

from __future__ import annotations

import configparser
import copy
import fnmatch
import functools
import importlib.metadata
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from cluster import validate as v

ROOT = v.ROOT
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent  # hadolint and shellcheck come with the dev extra
KUBECTL_IMAGE = "registry.k8s.io/kubectl:v1.34.1"
SETTINGS = "pumpfleet-settings"
Doc = dict[str, Any]


def objects(kind: str) -> list[Doc]:
    return [d for _, d in v.manifests() if d.get("kind") == kind]


def manifest(file: str, kind: str) -> Doc:
    """A copy of the one object of ``kind`` in ``file`` (relative to cluster/)."""
    found = [d for w, d in v.manifests() if w.startswith(f"{file}#") and d["kind"] == kind]
    assert len(found) == 1, (file, kind, len(found))
    return copy.deepcopy(found[0])


def checked(doc: Doc) -> list[str]:
    try:
        return v.problems(doc)
    except v.CRDsMissing as e:
        pytest.skip(str(e))


def settings() -> dict[str, str]:
    return dict(manifest("k8s/base/10-settings.yaml", "ConfigMap")["data"])


# --- the Dockerfile's images ------------------------------------------------------------


@functools.cache
def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> FROM image, ARGs, LABELs and instructions (continuations joined);
    "" holds the global ARGs."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    current: dict[str, Any] = {"from": None, "args": [], "labels": {}, "lines": []}
    stages = {"": current}
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            image, _, name = rest.partition(" AS ")
            current = {"from": image.strip(), "args": [], "labels": {}, "lines": []}
            stages[name.strip()] = current
        elif word == "ARG":
            current["args"].append(rest.split("=")[0])
        elif word == "LABEL":
            current["labels"].update(re.findall(r'(\S+)="([^"]*)"', rest))
        current["lines"].append(line)
    return stages


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@functools.cache
def images() -> dict[str, str]:
    """What the Dockerfile's stages are tagged: the images the manifests may name."""
    version = pyproject()["project"]["version"]
    ray, mlflow = dockerfile_stages()["pumpfleet"], dockerfile_stages()["mlflow"]
    return {
        "cpu": f"{ray['labels']['io.pumpfleet.image']}:{version}",
        "gpu": f"{ray['labels']['io.pumpfleet.image']}:{version}-gpu",
        "mlflow": f"{mlflow['labels']['io.pumpfleet.image']}:{version}",
        "kubectl": KUBECTL_IMAGE,
    }


def containers(node: Any) -> Iterator[Doc]:
    """Every container and init container anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def ray_groups() -> Iterator[tuple[str, Doc]]:
    """(where, group) for the head and worker groups of every Ray cluster spec."""
    for where, doc in v.manifests():
        spec = doc.get("spec", {})
        for cluster in (spec, spec.get("rayClusterSpec"), spec.get("rayClusterConfig")):
            if isinstance(cluster, dict) and "headGroupSpec" in cluster:
                yield f"{where} head", cluster["headGroupSpec"]
                for group in cluster.get("workerGroupSpecs", []):
                    yield f"{where} {group['groupName']}", group


def ray_specs() -> Iterator[tuple[str, Doc]]:
    """(where, RayJob spec) of every RayJob, RayCronJob template included."""
    for where, doc in v.manifests():
        if doc.get("kind") == "RayJob":
            yield where, doc["spec"]
        elif doc.get("kind") == "RayCronJob":
            yield where, doc["spec"]["jobTemplate"]


def workflows() -> dict[str, Doc]:
    out = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
        out[path.name] = doc
    return out


def steps(doc: Doc) -> Iterator[Doc]:
    for job in doc["jobs"].values():
        yield from job["steps"]


def shellcheck(script: str, shell: str = "bash") -> str:
    done = subprocess.run(
        [str(BIN / "shellcheck"), f"--shell={shell}", "--format=gcc", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout + done.stderr


# --- each object against its schema ----------------------------------------------------


def test_every_yaml_file_under_cluster_is_checked() -> None:
    # grafana/ (provisioning) and prometheus/ (rules and their tests) are checked by
    # tests/unit/test_dashboard.py and test_prometheus_rules.py (promtool); the PodMonitor
    # here.
    kinds = {"k8s", "runtime-env", "launcher", "grafana", "prometheus"}
    files = list(v.CLUSTER.rglob("*.yaml")) + list(v.CLUSTER.rglob("*.yml"))
    assert {p.relative_to(v.CLUSTER).parts[0] for p in files} == kinds
    import yaml

    (monitor,) = yaml.safe_load_all((v.CLUSTER / "prometheus" / "podmonitor.yaml").read_text())
    assert (monitor["kind"], monitor["metadata"]["namespace"]) == ("PodMonitor", "pumpfleet")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    for where, doc in v.manifests():
        assert doc.get("apiVersion") and doc.get("kind"), where
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "pumpfleet", where


@pytest.mark.parametrize(("where", "doc"), v.manifests(), ids=[w for w, _ in v.manifests()])
def test_every_manifest_is_valid(where: str, doc: Doc) -> None:
    assert checked(doc) == []


def test_every_cel_rule_of_the_crds_is_mirrored() -> None:
    def rules(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            yield from (r["rule"] for r in node.get("x-kubernetes-validations", []))
            for value in node.values():
                yield from rules(value)
        elif isinstance(node, list):
            for value in node:
                yield from rules(value)

    try:
        found = {r for schema in v.crds().values() for r in rules(schema)}
    except v.CRDsMissing as e:
        pytest.skip(str(e))
    assert found - set(v.CEL_RULES) == set()


def test_runtime_envs_and_the_ray_up_file_are_valid() -> None:
    envs = sorted((v.CLUSTER / "runtime-env").glob("*.yaml"))
    assert [p.name for p in envs] == ["dev.yaml", "image.yaml"]
    for path in envs:
        assert v.runtime_env_problems(yaml.safe_load(path.read_text())) == [], path
    for path in sorted((v.CLUSTER / "launcher").glob("*.yaml")):
        assert v.launcher_problems(path) == [], path


def test_workflows_are_valid() -> None:
    import check_jsonschema

    vendored = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
    schema = json.loads((vendored / "github-workflows.json").read_text())
    docs = workflows()
    assert set(docs) == {"ci.yml", "release.yml", "monitor.yml"}
    for name, doc in docs.items():
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
        assert errors == [], name
        assert doc["permissions"] == {"contents": "read"}, name  # least privilege by default
        for job_name, job in doc["jobs"].items():
            assert job["runs-on"] and job["steps"] and job["timeout-minutes"], job_name
        for step in steps(doc):
            if "uses" in step:
                assert re.search(r"@(v\d+|[0-9a-f]{40})$", step["uses"]), step["uses"]
    ci_steps = [s.get("run", "") for s in steps(docs["ci.yml"])]
    assert "bash .ci/run" in ci_steps and (ROOT / ".ci" / "run").is_file()
    assert "push" in docs["ci.yml"]["on"]
    assert docs["release.yml"]["on"]["push"]["tags"] == ["v*"]
    assert docs["monitor.yml"]["on"]["schedule"]


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(done.stdout or "null") == [], done.stdout + done.stderr


def test_shell_passes_shellcheck() -> None:
    scripts = sorted((v.CLUSTER / "scripts").glob("*.sh"))
    assert scripts
    for path in scripts:
        assert path.stat().st_mode & stat.S_IXUSR, f"{path} is not executable"
        assert shellcheck(path.read_text()) == "", path
    for name, doc in workflows().items():
        for step in steps(doc):
            if "run" in step:  # GitHub expressions are gone before the shell sees them
                script = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", step["run"])
                assert shellcheck(script) == "", (name, step.get("name"))
    for where, spec in ray_specs():
        command = spec["entrypoint"]
        if command.startswith("sh -c "):
            assert shellcheck(shlex.split(command)[2], shell="sh") == "", where


# --- the validator fails where it should ----------------------------------------------


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


BROKEN = [
    ("k8s/base/40-raycluster.yaml", "RayCluster", "spec.workerGroupSpecs.0.maxReplicas",
     "ten", "'ten' is not of type 'integer'"),
    ("k8s/base/40-raycluster.yaml", "RayCluster", "spec.workerGroupSpec", [],
     "'workerGroupSpec' was unexpected"),
    ("k8s/base/40-raycluster.yaml", "RayCluster", "spec.rayVersion", "2.40.0",
     "token authentication needs rayVersion >= 2.52.0"),
    ("k8s/base/40-raycluster.yaml", "RayCluster", "metadata.name", "Pumpfleet",
     "not a DNS-1035 label"),
    ("k8s/jobs/rayjob-retrain.yaml", "RayJob", "spec.entrypoint",
     "python -m ray_jobs.ingest; python -m ray_jobs.train", "unquoted shell operators"),
    ("k8s/jobs/rayjob-retrain.yaml", "RayJob", "spec.deletionStrategy",
     {"onSuccess": {"policy": "DeleteSelf"},
      "deletionRules": [{"condition": {"jobStatus": "FAILED"}, "policy": "DeleteSelf"}]},
     "cannot be used together"),
    ("k8s/jobs/rayjob-retrain.yaml", "RayJob", "spec.runtimeEnvYAML", "envvars: {A: b}\n",
     "unknown runtime_env fields ['envvars']"),
    ("k8s/jobs/rayjob-train.yaml", "RayJob", "spec.shutdownAfterJobFinishes", False,
     "ttlSecondsAfterFinished needs shutdownAfterJobFinishes"),
    ("k8s/base/50-rayservice.yaml", "RayService", "spec.upgradeStrategy.type", "BlueGreen",
     "'BlueGreen' is not a valid type"),
    ("k8s/base/50-rayservice.yaml", "RayService", "spec.serveConfigV2",
     "applications:\n- name: a\n  import_path: serve_apps.scoring:build_app\n"
     "  args: {tracking_uri: x, predictions_dir: y, challenger_weight: 2}\n",
     "challenger_weight"),
    ("k8s/alternatives/raycronjob-retrain.yaml", "RayCronJob", "spec.schedule", "daily",
     "not a 5-field cron schedule"),
    ("k8s/base/30-mlflow.yaml", "Deployment", "spec.replicas", "one",
     "'one' is not of type 'integer', 'null'"),
    ("k8s/base/60-retrain-cronjob.yaml", "CronJob", "spec.schedul", "0 3 * * *",
     "'schedul' was unexpected"),
    ("k8s/base/10-settings.yaml", "ConfigMap", "data.RAY_USAGE_STATS_ENABLED", 0,
     "0 is not of type 'string'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("file", "kind", "path", "value", "expected"), BROKEN, ids=[b[2] for b in BROKEN]
)
def test_a_broken_manifest_is_refused(
    file: str, kind: str, path: str, value: Any, expected: str
) -> None:
    doc = manifest(file, kind)
    assert checked(doc) == []
    _set(path, value)(doc)
    found = checked(doc)
    assert any(expected in p for p in found), found


def test_an_entry_point_that_names_no_module_or_option_is_refused() -> None:
    assert v.entry_point_problems(["python", "-m", "ray_jobs.trian"]) == [
        "ray_jobs.trian: no such module in the repository"
    ]
    assert v.entry_point_problems(["python", "-m", "ray_jobs.train", "--epoch", "2"]) == [
        "ray_jobs.train: no option --epoch"
    ]
    assert v.entry_point_problems(["python", "ray_jobs/train.py"])


# --- across files ---------------------------------------------------------------------------


def test_images_are_the_ones_the_dockerfile_builds() -> None:
    named = {c["image"] for _, doc in v.manifests() for c in containers(doc)}
    assert named == set(images().values())
    for where, group in ray_groups():
        (ray,) = group["template"]["spec"]["containers"][:1]
        gpus = ray["resources"].get("limits", {}).get("nvidia.com/gpu")
        assert ray["image"] == images()["gpu" if gpus else "cpu"], where
    (mlflow,) = containers(manifest("k8s/base/30-mlflow.yaml", "Deployment"))
    assert mlflow["image"] == images()["mlflow"]
    launcher = yaml.safe_load((v.CLUSTER / "launcher" / "pumpfleet-vms.yaml").read_text())
    assert launcher["docker"]["image"] == images()["cpu"]
    assert dockerfile_stages()["pumpfleet"]["lines"][-1].startswith("WORKDIR")
    assert any(line.startswith("USER 1000") for line in dockerfile_stages()["pumpfleet"]["lines"])
    assert any(line.startswith("USER 1000") for line in dockerfile_stages()["mlflow"]["lines"])


def test_versions_agree() -> None:
    ray_version = importlib.metadata.version("ray")
    mlflow_version = importlib.metadata.version("mlflow")
    python = pyproject()["project"]["requires-python"]  # ">=3.11,<3.12"
    stage = dockerfile_stages()["pumpfleet"]
    assert stage["from"] == f"rayproject/ray:{ray_version}-py311-${{VARIANT}}"
    assert "3.11" in python and dockerfile_stages()["mlflow"]["from"].startswith("python:3.11")
    assert dockerfile_stages()[""]["args"] == ["VARIANT"]
    cloud = pyproject()["project"]["optional-dependencies"]["cloud"]
    assert f"mlflow=={mlflow_version}" in cloud and f"ray[tune,serve,data]=={ray_version}" in cloud
    mlflow_stage = " ".join(dockerfile_stages()["mlflow"]["lines"])
    assert f'"mlflow[auth,db]=={mlflow_version}"' in mlflow_stage
    for where, doc in v.manifests():
        spec = doc.get("spec", {})
        for cluster in (spec, spec.get("rayClusterSpec"), spec.get("rayClusterConfig")):
            if isinstance(cluster, dict) and "headGroupSpec" in cluster:
                assert cluster["rayVersion"] == ray_version, where
    kubectl_minor = KUBECTL_IMAGE.rsplit(":v", 1)[1].rsplit(".", 1)[0]
    assert v.K8S_VERSION.startswith(kubectl_minor + ".")


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins."""
    ignored = False
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p for p in lines if p and not p.startswith("#")]
    copied = [
        src
        for line in dockerfile_stages()["pumpfleet"]["lines"]
        if line.startswith("COPY")
        for src in line.split()[2:-1]
    ]
    assert copied and not [c for c in copied if _ignored(c.rstrip("/") + "/x.py", patterns)]
    for kept_out in (".venv/bin/python", ".pumpfleet/mlflow.db", "mlflow.db", "tests/x.py"):
        assert _ignored(kept_out, patterns), kept_out
    assert _ignored("pumpfleet/__pycache__/x.pyc", patterns)


def test_entry_points_name_modules_and_options_that_exist() -> None:
    modules = set()
    for where, spec in ray_specs():
        commands = v.python_commands(spec["entrypoint"])
        assert commands, where
        for argv in commands:
            assert v.entry_point_problems(argv) == [], where
            modules.add(argv[2])
    assert modules == {"ray_jobs.train", "ray_jobs.retrain", "ray_jobs.monitor"}


def _settings_env_names() -> set[str]:
    from pydantic import AliasChoices

    from pumpfleet.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str)}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def test_every_ray_pod_gets_the_settings_the_code_reads() -> None:
    from ray_jobs._ray import _PASS_ON

    names = _settings_env_names()
    assert {"PUMPFLEET_HOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"} <= names
    data = settings()
    assert {"PUMPFLEET_HOME", "MLFLOW_TRACKING_URI"} <= set(data)
    assert set(_PASS_ON) <= set(data)  # what the drivers pass on to their workers
    home = data["PUMPFLEET_HOME"]
    for where, group in ray_groups():
        spec = group["template"]["spec"]
        ray = spec["containers"][0]
        sources = [next(iter(s.values()))["name"] for s in ray["envFrom"]]
        assert sources[:2] == [SETTINGS, "pumpfleet-mlflow-client"], where
        # KubeRay sets RAY_ADDRESS in Ray pods, and `ray job submit` for each driver.
        assert "RAY_ADDRESS" not in {e["name"] for e in ray.get("env", [])}, where
        mounts = {m["mountPath"]: m["name"] for m in ray["volumeMounts"]}
        claims = {
            vol["name"]: vol["persistentVolumeClaim"]["claimName"]
            for vol in spec["volumes"]
            if "persistentVolumeClaim" in vol
        }
        assert claims[mounts[home]] == "pumpfleet-home", where
        memory = [x["name"] for x in spec["volumes"] if x.get("emptyDir", {}).get("medium")]
        assert mounts.get("/dev/shm") in memory, where  # Ray's object store
    env_file = (v.CLUSTER / "launcher" / "cluster.env.example").read_text()
    assert {"PUMPFLEET_HOME", "MLFLOW_TRACKING_URI"} <= set(re.findall(r"^(\w+)=", env_file, re.M))


def _env_names_set() -> dict[str, str]:
    """Every environment variable the manifests, runtime envs and launcher set -> where."""
    out: dict[str, str] = {}
    for where, doc in v.manifests():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] in (SETTINGS, "mlflow-server"):
            out |= dict.fromkeys(doc["data"], where)
        if doc["kind"] == "Secret" and doc["metadata"]["name"] != "mlflow-auth":
            out |= dict.fromkeys(doc["stringData"], where)
        for c in containers(doc):
            out |= {e["name"]: where for e in c.get("env", [])}
    for where, spec in ray_specs():
        out |= dict.fromkeys(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"], where)
    for path in (v.CLUSTER / "runtime-env").glob("*.yaml"):
        out |= dict.fromkeys(yaml.safe_load(path.read_text()).get("env_vars", {}), path.name)
    env_file = (v.CLUSTER / "launcher" / "cluster.env.example").read_text()
    out |= dict.fromkeys(re.findall(r"^(\w+)=", env_file, re.M), "cluster.env.example")
    return out


def test_every_env_var_set_is_one_something_reads() -> None:
    import mlflow.cli
    import mlflow.environment_variables as mlflow_env

    mlflow_names = {
        getattr(var, "name", None) for var in vars(mlflow_env).values() if hasattr(var, "name")
    } | {p.envvar for p in mlflow.cli.server.params if isinstance(p.envvar, str)}
    ray_names = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED"}
    others = {"DO_NOT_TRACK", "ORT_DISABLE_TELEMETRY", "NML_DISABLE_USAGE_LOGGING"}
    others |= {"PYTHONUNBUFFERED", "HOME"}

    def known(name: str) -> bool:
        if name.startswith("PUMPFLEET_"):
            return name in _settings_env_names()
        if name.startswith("MLFLOW_"):
            return name in mlflow_names
        if name.startswith("RAY_"):
            return name in ray_names
        return name in others or name.startswith("AWS_")

    unknown = {n: w for n, w in _env_names_set().items() if not known(n)}
    assert unknown == {}
    assert not known("PUMPFLEET_HOM") and not known("MLFLOW_TRACKING_URL")


def test_the_scoring_service_uses_the_cluster_settings() -> None:
    from pumpfleet.settings import Settings
    from serve_apps.scoring import ScoringConfig

    service = manifest("k8s/base/50-rayservice.yaml", "RayService")
    apps = {a["name"]: a for a in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]}
    assert sorted(apps) == ["pumpfleet", "pumpfleet-staging"]
    data = settings()
    home = Settings(home=Path(data["PUMPFLEET_HOME"]))
    for app in apps.values():
        config = ScoringConfig(**app["args"])  # the app's typed argument accepts them
        assert config.tracking_uri == data["MLFLOW_TRACKING_URI"]
    assert apps["pumpfleet"]["args"]["predictions_dir"] == str(home.predictions_dir)
    assert apps["pumpfleet-staging"]["args"]["stage"] == "staging"
    assert apps["pumpfleet-staging"]["route_prefix"] == "/staging"
    # staging's predictions are not production's: monitoring reads only the latter
    assert apps["pumpfleet-staging"]["args"]["predictions_dir"] != str(home.predictions_dir)
    # retraining is submitted to the training cluster's head (KubeRay's <name>-head-svc)
    cluster = manifest("k8s/base/40-raycluster.yaml", "RayCluster")["metadata"]
    jobs = urlsplit(apps["pumpfleet"]["args"]["jobs_address"])
    assert jobs.hostname == f"{cluster['name']}-head-svc.{cluster['namespace']}.svc"


def test_the_mlflow_server_answers_the_uri_its_clients_use() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    uri = urlsplit(settings()["MLFLOW_TRACKING_URI"])
    service = manifest("k8s/base/30-mlflow.yaml", "Service")
    name, namespace, _ = (uri.hostname or "").split(".", 2)
    assert (name, namespace) == (service["metadata"]["name"], service["metadata"]["namespace"])
    assert uri.port == service["spec"]["ports"][0]["port"]
    config = manifest("k8s/base/30-mlflow.yaml", "ConfigMap")["data"]
    allowed = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert is_allowed_host_header(allowed, uri.netloc)
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "evil.example:5000")
    deployment = manifest("k8s/base/30-mlflow.yaml", "Deployment")
    (server,) = containers(deployment)
    assert server["args"][server["args"].index("--app-name") + 1] == "basic-auth"
    auth_dir, auth_file = config["MLFLOW_AUTH_CONFIG_PATH"].rsplit("/", 1)
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == auth_dir)
    volume = next(
        x for x in deployment["spec"]["template"]["spec"]["volumes"] if x["name"] == mount["name"]
    )
    auth = next(
        d for d in objects("Secret") if d["metadata"]["name"] == volume["secret"]["secretName"]
    )
    ini = configparser.ConfigParser()
    ini.read_string(auth["stringData"][auth_file])
    assert ini["mlflow"]["default_permission"] in ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
    assert ini["mlflow"]["database_uri"].startswith("postgresql://")
    assert ini["mlflow"]["authorization_function"].startswith("mlflow.server.auth:")
    backend = next(d for d in objects("Secret") if d["metadata"]["name"] == "mlflow-server")
    assert backend["stringData"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")


def test_references_between_objects_resolve() -> None:
    defined = {(d["kind"], d["metadata"].get("name")) for _, d in v.manifests()}
    base = [d for w, d in v.manifests() if w.startswith("k8s/base/")]
    assert not [d for d in base if d["kind"] == "Secret"], "no credentials in base/"
    for where, doc in v.manifests():
        text = json.dumps(doc)
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            for name in re.findall(rf'"{key}": {{"name": "([^"]+)"', text):
                assert (kind, name) in defined, (where, kind, name)
        for name in re.findall(r'"claimName": "([^"]+)"', text):
            assert ("PersistentVolumeClaim", name) in defined, where
        for name in re.findall(r'"serviceAccountName": "([^"]+)"', text):
            assert ("ServiceAccount", name) in defined, where
        for name in re.findall(r'"secretName": "([^"]+)"', text):
            assert ("Secret", name) in defined, where
    for secret in objects("Secret"):
        for key, value in secret["stringData"].items():
            secretish = re.search(r"PASSWORD|SECRET|TOKEN", key) or key.endswith(".ini")
            assert not secretish or "CHANGE-ME" in value, (secret["metadata"]["name"], key)


def test_the_retraining_job_is_the_same_everywhere() -> None:
    job = manifest("k8s/jobs/rayjob-retrain.yaml", "RayJob")
    held = [d for w, d in v.manifests() if w.startswith("k8s/base/60-retrain-cronjob.yaml#3/")]
    assert held == [job]
    cron_job = manifest("k8s/alternatives/raycronjob-retrain.yaml", "RayCronJob")
    assert cron_job["spec"]["jobTemplate"] == job["spec"]
    cron = manifest("k8s/base/60-retrain-cronjob.yaml", "CronJob")
    assert cron["spec"]["schedule"] == cron_job["spec"]["schedule"]
    assert cron["spec"]["timeZone"] == cron_job["spec"]["timeZone"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (kubectl,) = pod["containers"]
    held_map = manifest("k8s/base/60-retrain-cronjob.yaml", "ConfigMap")
    volume = next(x for x in pod["volumes"] if x.get("configMap"))
    mount = next(m for m in kubectl["volumeMounts"] if m["name"] == volume["name"])
    assert volume["configMap"]["name"] == held_map["metadata"]["name"]
    (key,) = held_map["data"]
    assert kubectl["args"] == ["create", f"--filename={mount['mountPath']}/{key}"]
    role = manifest("k8s/base/60-retrain-cronjob.yaml", "Role")
    assert {
        "apiGroups": ["ray.io"],
        "resources": ["rayjobs"],
        "verbs": ["create", "get", "list"],
    } in role["rules"]
    binding = manifest("k8s/base/60-retrain-cronjob.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "pumpfleet"}
    ]
    clusters = {d["metadata"]["name"] for d in objects("RayCluster")}
    for where, spec in ray_specs():
        selector = spec.get("clusterSelector")
        assert not selector or selector["ray.io/cluster"] in clusters, where


def test_jobs_are_created_and_carry_the_image_runtime_env() -> None:
    image_env = yaml.safe_load((v.CLUSTER / "runtime-env" / "image.yaml").read_text())
    for where, spec in ray_specs():
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == image_env, where
    for where, doc in v.manifests():
        if doc["kind"] == "RayJob":  # `kubectl create`: a new RayJob every run
            assert "generateName" in doc["metadata"] and "name" not in doc["metadata"], where


def test_the_release_builds_what_the_manifests_name() -> None:
    release = workflows()["release.yml"]
    builds = [s for s in steps(release) if s.get("uses", "").startswith("docker/build-push")]
    stages, args = dockerfile_stages(), {a for s in dockerfile_stages().values() for a in s["args"]}
    tags = {}
    for step in builds:
        w = step["with"]
        assert w.get("target", "pumpfleet") in stages
        build_args = dict(line.split("=", 1) for line in w.get("build-args", "").split())
        assert set(build_args) <= args
        variant = "gpu" if build_args.get("VARIANT") == "gpu" else w.get("target", "cpu")
        tags[variant.replace("pumpfleet", "cpu")] = w["tags"]
    repo, version = images()["cpu"].rsplit(":", 1)
    names = next(s for s in steps(release) if s.get("id") == "names")["run"]
    assert f"repository=ghcr.io/$owner/{repo.rsplit('/', 1)[1]}" in names
    for variant, image in images().items():
        if variant != "kubectl":
            expected = image.replace(repo, "${{ steps.names.outputs.repository }}")
            assert tags[variant] == expected.replace(version, "${{ steps.names.outputs.version }}")
    for doc in workflows().values():
        for step in steps(doc):
            for path in re.findall(r"(cluster/\S+\.(?:sh|yaml))", step.get("run", "")):
                assert (ROOT / path).is_file(), path


FAKE_KUBECTL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_DIR/calls"
case "$1" in
  create) cat > "$FAKE_DIR/created.yaml"; echo rayjob.ray.io/pumpfleet-train-x7k2q ;;
  get)
    polls=$(( $(cat "$FAKE_DIR/polls" 2>/dev/null || echo 0) + 1 ))
    echo "$polls" > "$FAKE_DIR/polls"
    case "$*" in
      *jobDeploymentStatus*) if [ "$polls" -ge 3 ]; then echo Complete; else echo Running; fi ;;
      *jobStatus*) echo "$FAKE_JOB_STATUS" ;;
    esac ;;
  logs) echo '{"status": "success"}' ;;
esac
"""


@pytest.mark.parametrize(("job_status", "rc"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_run_rayjob_creates_waits_and_reports(tmp_path: Path, job_status: str, rc: int) -> None:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "FAKE_DIR": str(tmp_path),
        "FAKE_JOB_STATUS": job_status,
        "RAYJOB_POLL_SECONDS": "0",
    }
    done = subprocess.run(
        [str(v.CLUSTER / "scripts" / "run-rayjob.sh"), str(v.K8S / "jobs" / "rayjob-train.yaml"),
         "registry.example/acme/pumpfleet", "1.2.3"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == rc, done.stdout + done.stderr
    assert '{"status": "success"}' in done.stdout
    assert f"deployment Complete, job {job_status}" in done.stdout
    created = yaml.safe_load((tmp_path / "created.yaml").read_text())
    used = {c["image"] for c in containers(created)}
    assert used == {
        "registry.example/acme/pumpfleet:1.2.3",
        "registry.example/acme/pumpfleet:1.2.3-gpu",
    }
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "create -f - -o name" and calls[-1].startswith(
        "logs job/pumpfleet-train-x7k2q"
    )
