"""What lives inside strings of pumpfleet's cluster manifests: Serve configs, runtime
environments, entry points (one shell command; modules and flags that exist) and `ray up`
files. Part of :mod:`cluster.validate`."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import typing
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHELL_OPERATOR = re.compile(r"^[;&|<>()]+$")


# --- what lives inside strings: Serve config, runtime envs, entry points ---------------


def runtime_env_problems(env: Any) -> list[str]:
    from ray.runtime_env import RuntimeEnv

    if not isinstance(env, dict):
        return [f"a runtime env is a mapping, not {type(env).__name__}"]
    unknown = sorted(set(env) - set(RuntimeEnv.known_fields))
    if unknown:
        return [f"unknown runtime_env fields {unknown}"]
    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as e:
        return [str(e)]
    return []


def serve_config_problems(text: str) -> list[str]:
    from pydantic import BaseModel, ValidationError
    from ray import serve
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    config = yaml.safe_load(text)
    try:
        parsed = ServeDeploySchema.model_validate(config)
    except ValidationError as e:
        return [f"serveConfigV2: {e}"]
    # Serve ignores unknown keys: a misspelt one would silently do nothing.
    top = set(config) - set(ServeDeploySchema.model_fields)
    out = [f"serveConfigV2: unknown key {k}" for k in sorted(top)]
    for app, raw in zip(parsed.applications, config["applications"], strict=True):
        out += [
            f"serveConfigV2 {app.name}: unknown key {k}"
            for k in set(raw) - set(ServeApplicationSchema.model_fields)
        ]
        module_name, _, attr = app.import_path.partition(":")
        module = importlib.import_module(module_name)
        builder = getattr(module, attr)
        arg_type = next(iter(typing.get_type_hints(builder).values()))
        if isinstance(arg_type, type) and issubclass(arg_type, BaseModel):
            try:
                arg_type.model_validate(app.args)
            except ValidationError as e:
                out.append(f"serveConfigV2 {app.name} args: {e}")
        names = {d.name for d in vars(module).values() if isinstance(d, serve.Deployment)}
        for dep, raw_dep in zip(app.deployments, raw.get("deployments", []), strict=True):
            if dep.name not in names:
                out.append(f"serveConfigV2 {app.name}: no deployment {dep.name} in {module_name}")
            out += [
                f"serveConfigV2 {dep.name}: unknown key {k}"
                for k in set(raw_dep) - set(DeploymentSchema.model_fields)
            ]
    return out


def python_commands(command: str) -> list[list[str]]:
    """The `python ...` commands a shell command line runs, looking inside sh -c '...'."""
    tokens = shlex.split(command)
    if tokens[:2] in (["sh", "-c"], ["bash", "-c"]):
        return python_commands(tokens[2])
    out: list[list[str]] = [[]]
    for token in shlex.shlex(command, posix=True, punctuation_chars=True):
        if SHELL_OPERATOR.match(token):
            out.append([])
        else:
            out[-1].append(token)
    return [argv for argv in out if argv and argv[0] in ("python", "python3")]


def entry_point_problems(argv: list[str]) -> list[str]:
    """A `python -m MODULE --flag ...` that this repository can run."""
    if argv[1:2] != ["-m"]:
        return [f"{argv}: run entry points as python -m MODULE"]
    path = ROOT.joinpath(*argv[2].split(".")).with_suffix(".py")
    if not path.is_file():
        return [f"{argv[2]}: no such module in the repository"]
    source = path.read_text()
    if 'if __name__ == "__main__":' not in source:
        return [f"{argv[2]}: not runnable"]
    flags = [a.split("=")[0] for a in argv[3:] if a.startswith("--")]
    known = _help_text(argv[2])
    return [f"{argv[2]}: no option {f}" for f in flags if not re.search(rf"{f}\b", known)]


def _help_text(module_name: str) -> str:
    """What ``python -m MODULE --help`` prints: the options its own parser takes (some
    are added by ``pumpfleet.job_options``, so the module's source does not name them)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        importlib.import_module(module_name).main(["--help"])
    return out.getvalue()


def launcher_problems(path: Path) -> list[str]:
    """A `ray up` file, through Ray's own defaults and schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(yaml.safe_load(path.read_text())))
    except (jsonschema.ValidationError, ValueError, TypeError, KeyError) as e:
        return [str(e).splitlines()[0]]
    return []
