"""pumpfleet against remote engines, as on a cluster, but on this machine:

- an MLflow tracking server over HTTP, with the basic-auth app and the auth settings of
  cluster/k8s (SQLite in place of PostgreSQL): train -> register -> promote through it;
- a Ray head started with `ray start` (token authentication, dashboard and job server on
  loopback): the entry points submitted with `ray job submit`, as cluster/README.md says.

Each server runs in a process group of its own; stopping it ends exactly that group and
whatever else carries its unique token or temp dir, never another Ray or MLflow here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FLEET = SimulationConfig(pumps=16, days=30, seed=7)


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, s: float) -> None:
    """Poll ``check`` until it holds; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"server not up after {s:.0f} s:\n{log.read_text()[-3000:]}")


def _ours(pid: int, pgid: int, marks: tuple[str, ...]) -> bool:
    """A process of the group we started, or one that carries our unique token or temp
    dir in its command line or environment (a Ray job driver runs in a session of its own)."""
    try:
        if os.getpgid(pid) == pgid:
            return True
        proc = Path(f"/proc/{pid}")
        seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    except (OSError, ProcessLookupError):
        return False
    return any(m.encode() in seen for m in marks)


def leftovers(pgid: int, marks: tuple[str, ...]) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [p for p in pids if p != os.getpid() and _ours(p, pgid, marks) and _alive(p)]


# `ray start --block` rarely exits on SIGTERM: of five heads measured, four still ran a
# minute later (its raylet and agents too), one exited in 1.6 s. Waiting longer only
# delays the SIGKILL that ends them anyway.
RAY_NODE_GRACE = 2.0


def stop(proc: subprocess.Popen[bytes], *marks: str, grace: float = 30) -> None:
    """Stop what we started and nothing else: SIGTERM to the process group we made, then
    SIGKILL to whatever of ours is left after ``grace`` seconds."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    for _ in range(20):
        left = leftovers(pgid, marks)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not left:
            break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.wait(timeout=10)
    assert leftovers(pgid, marks) == []


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- MLflow over HTTP ---------------------------------------------------------------------


def auth_ini(database_uri: str) -> str:
    """The basic-auth settings of cluster/k8s/secrets.example.yaml, on another database."""
    docs = yaml.safe_load_all((ROOT / "cluster" / "k8s" / "secrets.example.yaml").read_text())
    secret = next(d for d in docs if d["metadata"]["name"] == "mlflow-auth")
    ini = secret["stringData"]["basic_auth.ini"]
    return re.sub(r"(?m)^database_uri = .*$", f"database_uri = {database_uri}", ini)


@pytest.fixture(scope="module")
def mlflow_boot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An MLflow server with basic-auth, for the MLflow test alone: under ``make test``
    the Ray job test runs on the other worker (tests/conftest.py: ON_THEIR_OWN), where
    a server started with the module booted for nothing."""
    root = tmp_path_factory.mktemp("mlflow-server")
    (root / "basic_auth.ini").write_text(auth_ini(f"sqlite:///{root}/auth.db"))
    admin = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    port = free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server",
             "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--app-name", "basic-auth"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield {"url": f"http://127.0.0.1:{port}", "admin_password": admin, "proc": proc, "log": log}
    finally:
        stop(proc, str(root), grace=10)


@pytest.fixture
def mlflow_server(mlflow_boot: dict[str, Any]) -> dict[str, Any]:
    url = mlflow_boot["url"]
    healthy = lambda: httpx.get(f"{url}/health").status_code == 200  # noqa: E731
    wait_for(healthy, mlflow_boot["proc"], mlflow_boot["log"], 150)
    return mlflow_boot


# --- Ray jobs on a head started with `ray start` -----------------------------------------


def ray_cli(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ray"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Ray head on loopback with the job server, its settings in its environment (as a
    pod has them from the ConfigMap), and a fleet simulated in its workspace."""
    home = tmp_path_factory.mktemp("ray-head-home")
    simulate(FLEET, str(Settings(home=home).data_dir))
    # Ray's socket paths must fit in 107 bytes: a short temp dir of its own.
    temp = Path(tempfile.mkdtemp(prefix="pfr", dir="/tmp"))
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    base |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    # Token authentication, the same mode and token for the head and every CLI call; the
    # token is ours alone, never the shared ~/.ray/auth_token.
    client_env = base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head_env = client_env | {"PUMPFLEET_HOME": str(home)}
    ports = ["port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port",
             "node-manager-port", "object-manager-port"]  # fmt: skip
    chosen = {name: free_port() for name in ports}
    log = temp / "ray-start.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block",
             "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
             "--include-dashboard", "true", "--temp-dir", str(temp), "--num-cpus", "2",
             "--disable-usage-stats", *(f"--{k}={p}" for k, p in chosen.items())],
            env=head_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{chosen['dashboard-port']}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        wait_for(lambda: httpx.get(f"{url}/api/version", headers=auth).is_success, proc, log, 150)
        yield {"url": url, "env": client_env, "home": home, "token": token}
    finally:
        stop(proc, str(temp), token, grace=RAY_NODE_GRACE)
        shutil.rmtree(temp, ignore_errors=True)


def last_json(text: str) -> dict[str, Any]:
    """The JSON summary an entry point prints last (an object from a line '{' to '}')."""
    start = text.rindex("\n{\n") + 1
    end = text.index("\n}", start) + 2
    out: dict[str, Any] = json.loads(text[start:end])
    return out


def submit(head: dict[str, Any], name: str, *entrypoint: str) -> dict[str, Any]:
    """`ray job submit` from the repository root, exactly as cluster/README.md tells a user:
    the checkout as the working dir, the runtime env of cluster/runtime-env/dev.yaml."""
    job_id = f"{name}-{secrets.token_hex(4)}"
    done = ray_cli(
        head["env"],
        "job", "submit", "--address", head["url"], "--submission-id", job_id,
        "--working-dir", ".", "--runtime-env", "cluster/runtime-env/dev.yaml",
        "--", *entrypoint,
        timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    auth = {"Authorization": f"Bearer {head['token']}"}
    status = httpx.get(f"{head['url']}/api/jobs/{job_id}", headers=auth).json()["status"]
    assert status == "SUCCEEDED", done.stdout + done.stderr
    logs = ray_cli(head["env"], "job", "logs", "--address", head["url"], job_id, timeout=60)
    return last_json(logs.stdout)


def test_entry_points_run_as_ray_jobs_on_a_started_head(ray_head: dict[str, Any]) -> None:
    env, url = ray_head["env"], ray_head["url"]
    # Token authentication is on: the CLI without the token is refused.
    unauthenticated = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    refused = ray_cli(unauthenticated, "job", "list", "--address", url, timeout=60)
    assert refused.returncode != 0

    ingest = submit(ray_head, "ingest", "python", "-m", "ray_jobs.ingest")
    assert ingest["status"] == "success" and ingest["rows_quarantined"] == 0
    readings = FLEET.pumps * FLEET.days * 24 * 60 // FLEET.interval_minutes  # every one
    assert ingest["rows_valid"] == ingest["rows_in"] == readings and ingest["snapshot_id"]
    # The job wrote into the workspace the head was given (PUMPFLEET_HOME).
    assert (ray_head["home"] / "features" / ingest["snapshot_id"]).is_dir()

    # One class, one epoch: the submission is what is tested here, not the training.
    train = submit(
        ray_head, "train", "python", "-m", "ray_jobs.train", "--epochs", "1", "--classes", "esp"
    )
    assert train["snapshot_id"] == ingest["snapshot_id"]
    assert list(train["classes"]) == ["esp"] and train["failed_trials"] == {"esp": 0}
    # Tracked in the workspace's MLflow (no MLFLOW_TRACKING_URI on this head).
    registry = Registry(Settings(home=ray_head["home"]).tracking_uri)
    for cls, trained in train["classes"].items():
        assert registry.version_by_alias(model_name(cls), "challenger") == trained["version"]

    # What POST /v1/admin/retrain and `pumpfleet retrain --jobs-address` do: the retraining
    # job through the Job Submission API, with every option the user gave (none default).
    from pumpfleet.job_options import RetrainOptions
    from ray_jobs.triggers import submit_retrain

    runtime_env = yaml.safe_load((ROOT / "cluster/runtime-env/dev.yaml").read_text())
    options = RetrainOptions(
        classes=["esp"],
        reason="drift on esp (test)",
        source=str(Settings(home=ray_head["home"]).data_dir),
        epochs=1,
        seed=7,
        no_health=True,
        ab_weight=0.3,
    )
    job_id = submit_retrain(
        url, options, ray_head["token"], runtime_env={**runtime_env, "working_dir": str(ROOT)}
    )
    assert job_id.startswith("pumpfleet-retrain-")
    auth = {"Authorization": f"Bearer {ray_head['token']}"}
    deadline = time.monotonic() + 300
    while (status := httpx.get(f"{url}/api/jobs/{job_id}", headers=auth).json()["status"]) in (
        "PENDING", "RUNNING",
    ):  # fmt: skip
        assert time.monotonic() < deadline, "the retrain job did not finish in 300 s"
        time.sleep(0.5)
    logs = ray_cli(env, "job", "logs", "--address", url, job_id, timeout=60).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    retrain = last_json(logs)
    assert list(retrain["classes"]) == ["esp"] and retrain["reason"] == "drift on esp (test)"
    assert retrain["snapshot_id"] == ingest["snapshot_id"]  # nothing new arrived
    esp = retrain["classes"]["esp"]
    assert registry.version_by_alias(model_name("esp"), "challenger") == esp["challenger"]
    assert esp["promoted"] is False  # retraining never promotes unless told to
    # Every option arrived as given: the job echoes what it parsed, and acted on it.
    assert RetrainOptions(**retrain["options"]) == options
    assert retrain["health"] == {}  # --no-health
    from pumpfleet.routing import split_tags

    assert esp["challenger"] != esp["champion"]  # a new version, champion or not
    assert retrain["online_test"] == {"esp": split_tags(0.3)}  # --ab-weight 0.3
    assert registry.model_state(model_name("esp"))[1].items() >= split_tags(0.3).items()


# --- train -> register -> promote through the MLflow server -------------------------------


def test_train_register_promote_through_an_mlflow_server(
    mlflow_server: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ray_session: Any,
) -> None:
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    from pumpfleet.evaluation_run import promote_version, run_evaluate
    from pumpfleet.search_space import SearchSpace
    from pumpfleet.windows import WindowConfig
    from ray_jobs.ingest import ingest_and_log
    from ray_jobs.train import run_train

    url = mlflow_server["url"]
    query = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(query).status_code == 401  # basic-auth is on
    # The admin makes the user the Ray pods use (Secret pumpfleet-mlflow-client).
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server["admin_password"])
    AuthServiceClient(url).create_user("pumpfleet", password)
    # From here on, what a Ray pod has: the ConfigMap's URI and the Secret's user.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pumpfleet")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    settings = Settings(home=tmp_path / "ws")
    assert settings.tracking_uri == url

    simulate(FLEET, str(settings.data_dir))
    cfg = WindowConfig(stride=8)
    ingest = ingest_and_log(settings, str(settings.data_dir), str(settings.features_dir), cfg)
    # One class is enough to cross HTTP; on 2 cores, every class costs half a minute.
    train = run_train(settings, "latest", SearchSpace(lr=[1e-2], epochs=2), classes=["esp"])
    evaluated = run_evaluate(settings)
    assert list(train["classes"]) == list(evaluated["classes"]) == ["esp"]
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    assert client.get_run(ingest["mlflow_run_id"]).data.tags["feature_snapshot"]
    registry = Registry(url)
    for cls, trained in train["classes"].items():
        name = model_name(cls)
        assert client.get_model_version(name, trained["version"]).run_id == trained["run_id"]
        if not evaluated["classes"][cls]["promoted"]:  # two epochs may not beat the baseline
            forced = promote_version(
                settings, cls, trained["version"], force=True, reason="remote registry test"
            )
            assert forced["promoted"]
        assert registry.version_by_alias(name, CHAMPION) == trained["version"]
        assert client.get_model_version_by_alias(name, CHAMPION).version == trained["version"]
        loaded = registry.load(name, CHAMPION, tmp_path / "models")
        assert loaded.version == trained["version"] and loaded.onnx
    # Everything went through basic-auth as the pods' user: it owns what it created.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server["admin_password"])
    auth = AuthServiceClient(url)
    for cls in train["classes"]:
        found = auth.get_user_permission("pumpfleet", "registered_model", model_name(cls))
        assert found.permission == "MANAGE"
