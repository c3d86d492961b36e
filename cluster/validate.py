"""Validate pumpfleet's cluster manifests without a cluster and without starting Ray.

    python -m cluster.validate          # from the repository root, with the dev extra

- Kubernetes kinds: against Kubernetes' own schemas (kubernetes-validate, strict: an
  unknown field is an error, as under `kubectl apply`'s default field validation).
- KubeRay kinds: against the openAPIV3Schema of the CRDs in ../shared/specs/kuberay (made
  strict the same way), their CEL rules, and the checks the operator makes before it acts
  (a Python mirror of the part of KubeRay's validation.go that these manifests touch).
- What is inside strings: serveConfigV2 (Serve's schema and the builder's typed
  argument), runtime environments, entry points (one shell command; modules and flags
  that exist).

tests/unit/test_cluster_manifests.py runs it, plus the checks across files.
"""

from __future__ import annotations

import functools
import gzip
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from cluster.validate_strings import (
    SHELL_OPERATOR,
    entry_point_problems,
    launcher_problems,
    python_commands,
    runtime_env_problems,
    serve_config_problems,
)

CLUSTER = Path(__file__).resolve().parent
ROOT = CLUSTER.parent
K8S = CLUSTER / "k8s"
CRDS = ROOT.parent / "shared" / "specs" / "kuberay"
K8S_VERSION = "1.34.0"  # the Kubernetes schemas checked against (kubernetes-validate)
RAY_KINDS = {"RayCluster", "RayJob", "RayService", "RayCronJob"}
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Doc = dict[str, Any]


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.cache
def manifests() -> tuple[tuple[str, Doc], ...]:
    """Every object under cluster/k8s, named by file and position; a manifest held in a
    ConfigMap (the RayJob the CronJob creates) is one too."""
    out: list[tuple[str, Doc]] = []
    for path in sorted(K8S.rglob("*.yaml")):
        for i, doc in enumerate(load_all(path)):
            where = f"{path.relative_to(CLUSTER)}#{i}"
            out.append((where, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in doc.get("data", {}).items():
                    if key.endswith(".yaml"):
                        out += [(f"{where}/{key}", d) for d in yaml.safe_load_all(text) if d]
    return tuple(out)


# --- KubeRay: CRD schemas made strict, their CEL rules, the operator's checks ---------


def structural(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI v3 schema as JSON Schema that refuses unknown fields (unless the
    CRD preserves them), allows null where it is nullable, and bounds int32."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = structural(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [structural(sub) for sub in value]
        else:
            out[key] = value
    preserved = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and "additionalProperties" not in node and not preserved:
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    if node.get("type") == "integer" and node.get("format") == "int32":
        out.setdefault("minimum", -(2**31))
        out.setdefault("maximum", 2**31 - 1)
    return out


class CRDsMissing(Exception):
    """The KubeRay CRDs are not where ../shared keeps them."""


@functools.cache
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the served version's raw openAPIV3Schema."""
    if not CRDS.is_dir():
        raise CRDsMissing(f"{CRDS} not found: the KubeRay CRDs live in ../shared, not here")
    out = {}
    for path in sorted(CRDS.glob("*.yaml.gz")):
        # libyaml's loader (PyYAML's wheels carry it): the CRDs are megabytes of YAML,
        # about 4 s in the pure-Python one
        crd = yaml.load(gzip.decompress(path.read_bytes()), Loader=SAFE_LOADER)
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = version["schema"]["openAPIV3Schema"]
    return out


def _has(*fields: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(f in v for f in fields)


# Every CEL rule (x-kubernetes-validations) of the CRDs, as Python. Rules that compare
# with oldSelf constrain updates only and hold on create.
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "self == oldSelf": lambda v: True,
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda v: (
        v in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    ),
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))": lambda v: (
        not ((_has("onSuccess")(v) or _has("onFailure")(v)) and _has("deletionRules")(v))
    ),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))": lambda v: (
        _has("onSuccess", "onFailure")(v) or _has("deletionRules")(v)
    ),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))": lambda v: (
        not _has("jobStatus", "jobDeploymentStatus")(v)
    ),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)": lambda v: (
        _has("jobStatus")(v) or _has("jobDeploymentStatus")(v)
    ),
}


def cel_problems(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations", []):
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            yield f"{path}: CEL rule not mirrored in CEL_RULES: {rule['rule']}"
        elif not check(value):
            yield f"{path}: {rule.get('message', rule['rule'])}"
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            sub_schema = schema.get("properties", {}).get(key, extra)
            if isinstance(sub_schema, dict):
                yield from cel_problems(sub_schema, sub, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            yield from cel_problems(schema["items"], sub, f"{path}[{i}]")


DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def name_problems(meta: Doc, kind: str) -> list[str]:
    """KubeRay's limits on names (the Services it derives must fit 63 characters)."""
    limit = 53 if kind == "RayCluster" else 47
    # generateName gets 5 random characters from the API server
    name = meta.get("name") or meta.get("generateName", "") + "x" * 5
    if len(name) > limit or not DNS1035.match(name):
        return [f"metadata: {name!r} is not a DNS-1035 label of at most {limit} characters"]
    return []


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def cluster_spec_problems(spec: Doc, where: str) -> list[str]:
    out = []
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    autoscaled = spec.get("enableInTreeAutoscaling", False)
    v2 = autoscaled and spec.get("autoscalerOptions", {}).get("version") == "v2"
    for name, group in groups:
        params = group.get("rayStartParams", {})
        if not group["template"]["spec"].get("containers"):
            out.append(f"{where}: group {name} has no container")
        if group.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & set(params):
            out.append(f"{where}: group {name} sets resources twice (rayStartParams, resources)")
        if "labels" in params:
            out.append(f"{where}: group {name}: rayStartParams['labels'] is not supported")
        if v2 and group["template"]["spec"].get("restartPolicy", "Never") != "Never":
            out.append(f"{where}: group {name}: restartPolicy must be Never with autoscaler v2")
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if name != "head" and not low <= group.get("replicas", low) <= high:
            out.append(f"{where}: group {name}: replicas outside [minReplicas, maxReplicas]")
    token = spec.get("authOptions", {}).get("mode") == "token"
    if token and version_tuple(spec.get("rayVersion", "0")) < (2, 52, 0):
        out.append(f"{where}: token authentication needs rayVersion >= 2.52.0")
    return out


def entrypoint_problems(entrypoint: str) -> list[str]:
    """KubeRay pastes the entry point into a shell line of its own (`ray job submit ...
    -- ENTRYPOINT ; fi ; ray job logs ...`): an unquoted `;`, `&&` or `|` would end the
    submission there and run the rest in the submitter pod."""
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    try:
        operators = [t for t in lexer if SHELL_OPERATOR.match(t)]
    except ValueError as e:  # an unclosed quote
        return [f"entrypoint: {e}"]
    if operators:
        return [f"entrypoint: unquoted shell operators {operators}: wrap it in sh -c '...'"]
    return []


def job_spec_problems(spec: Doc, where: str) -> list[str]:
    out = []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    selector = spec.get("clusterSelector") or {}
    if spec.get("suspend") and (not shutdown or selector):
        out.append(f"{where}: only a RayJob with a cluster of its own can be suspended")
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not shutdown:
        out.append(f"{where}: ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    if "deletionStrategy" in spec:
        out.append(f"{where}: deletionStrategy needs the RayJobDeletionPolicy feature gate")
    if ("rayClusterSpec" in spec) == bool(selector):
        out.append(f"{where}: set exactly one of rayClusterSpec and clusterSelector")
    if selector and not selector.get("ray.io/cluster"):
        out.append(f"{where}: clusterSelector must name the cluster (ray.io/cluster)")
    if selector and spec.get("submissionMode") == "SidecarMode":
        out.append(f"{where}: clusterSelector is not supported in SidecarMode")
    if spec.get("activeDeadlineSeconds", 1) <= 0 or spec.get("backoffLimit", 0) < 0:
        out.append(f"{where}: activeDeadlineSeconds must be > 0 and backoffLimit >= 0")
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
    out += [f"{where}.runtimeEnvYAML: {p}" for p in runtime_env_problems(runtime_env)]
    entrypoint = spec.get("entrypoint", "")
    shell = entrypoint_problems(entrypoint)
    out += [f"{where}.{p}" for p in shell]
    for argv in python_commands(entrypoint) if entrypoint and not shell else []:
        out += [f"{where}.entrypoint: {p}" for p in entry_point_problems(argv)]
    if "rayClusterSpec" in spec:
        out += cluster_spec_problems(spec["rayClusterSpec"], f"{where}.rayClusterSpec")
    return out


CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def operator_problems(doc: Doc) -> list[str]:
    if "spec" not in doc:
        return ["spec: missing"]
    kind, spec = doc["kind"], doc["spec"]
    out = name_problems(doc["metadata"], kind)
    if kind == "RayCluster":
        out += cluster_spec_problems(spec, "spec")
    elif kind == "RayJob":
        out += job_spec_problems(spec, "spec")
    elif kind == "RayService":
        out += cluster_spec_problems(spec["rayClusterConfig"], "spec.rayClusterConfig")
        upgrade = spec.get("upgradeStrategy", {})
        if upgrade.get("type", "NewCluster") not in (
            "NewCluster",
            "NewClusterWithIncrementalUpgrade",
            "None",
        ):
            out.append(f"spec.upgradeStrategy.type: {upgrade['type']!r} is not a valid type")
        if upgrade.get("type") == "NewClusterWithIncrementalUpgrade":
            if not spec["rayClusterConfig"].get("enableInTreeAutoscaling"):
                out.append("spec.upgradeStrategy: incremental upgrades need the autoscaler")
            if not upgrade.get("clusterUpgradeOptions"):
                out.append("spec.upgradeStrategy: clusterUpgradeOptions are required")
        head_service = spec["rayClusterConfig"]["headGroupSpec"].get("headService", {})
        if head_service.get("metadata", {}).get("name"):
            out.append("spec.rayClusterConfig.headGroupSpec.headService: name is not allowed")
        out += serve_config_problems(spec.get("serveConfigV2", ""))
    elif kind == "RayCronJob":
        fields = spec["schedule"].split()
        if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
            out.append(f"spec.schedule: {spec['schedule']!r} is not a 5-field cron schedule")
        out += job_spec_problems(spec["jobTemplate"], "spec.jobTemplate")
    return out


def ray_problems(doc: Doc) -> list[str]:
    schema = crds().get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if schema is None:
        return [f"no served CRD version for {doc.get('apiVersion')} {doc.get('kind')}"]
    validator = jsonschema.Draft7Validator(structural(schema))
    out = [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    out += list(cel_problems(schema, doc, "(root)"))
    meta = doc.get("metadata", {})
    out += k8s_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
    return out or operator_problems(doc)


def k8s_problems(doc: Doc) -> list[str]:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def problems(doc: Doc) -> list[str]:
    """Everything wrong with one Kubernetes object; empty when it would be accepted."""
    if doc.get("kind") in RAY_KINDS:
        return ray_problems(doc)
    return k8s_problems(doc)


def all_problems() -> Iterator[str]:
    """Every problem in cluster/: manifests, runtime environments, `ray up` files."""
    for where, doc in manifests():
        yield from (f"{where}: {p}" for p in problems(doc))
    for path in sorted((CLUSTER / "runtime-env").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        yield from (f"{path.relative_to(CLUSTER)}: {p}" for p in runtime_env_problems(env))
    for path in sorted((CLUSTER / "launcher").glob("*.yaml")):
        yield from (f"{path.relative_to(CLUSTER)}: {p}" for p in launcher_problems(path))


def main() -> int:
    """Print every problem; exit 1 if there is one, 2 if the CRDs are not at hand."""
    found = 0
    try:
        for problem in all_problems():
            print(problem)
            found += 1
    except CRDsMissing as e:
        print(e)
        return 2
    print(f"{len(manifests())} objects checked: {found or 'no'} problems")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
