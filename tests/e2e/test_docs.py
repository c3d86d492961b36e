"""The README and the manual under docs/: every shell command in them is run against the
demo's workspace, so a command cannot drift from the code.

The convention (docs/development.md, "Commands in the docs"):

- a ```bash block is run; output goes in ```text blocks; config excerpts in ```yaml or
  ```json; no other fence language (a ```sh block would escape the test);
- HTML comments right above a block (the site does not show them) steer it:
  ``<!-- skip: KIND: why -->`` skips it with that reason (KIND: cluster, gpu, device, long,
  benchmark, server), after checking what can be checked without running it: its ``pumpfleet`` and
  ``pumpfleet-edge`` commands parse, its ``python -m`` modules and ``make`` targets exist,
  and the repository files it names are there; ``<!-- realdata -->`` marks a block that
  needs ../shared/data; ``<!-- expect: TEXT -->`` requires TEXT in its output;
  ``<!-- timeout: SECONDS -->`` sets its time limit (default 300);
- the blocks of one page run in order as one terminal session: exported variables and
  background processes carry over from block to block; the working folder is a fresh
  mirror of the repository root (every top-level entry linked, so repository paths
  resolve and files a block writes land in the mirror), with `.pumpfleet` there being the
  demo's workspace (also `PUMPFLEET_HOME`), the project's venv first on PATH and PORT a
  free port. What a page leaves running is stopped when the next page starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from pumpfleet import ports
from pumpfleet.ports import free_port as _free_port
from tests.conftest import SHARED_DATA

if TYPE_CHECKING:
    from tests.e2e.conftest import DemoRun

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 250
DEFAULT_TIMEOUT = 300

RUN_LANG = "bash"
OTHER_LANGS = {"text", "yaml", "json"}
SKIP_KINDS = {
    "cluster": "needs a Ray or Kubernetes cluster",
    "gpu": "needs an NVIDIA GPU",
    "device": "needs an edge device",
    "long": "takes minutes or more",
    "benchmark": "a benchmark: minutes of both cores, or gigabytes",
    "server": "runs until stopped",
}
# Not mirrored into a page's working folder: git's own, caches, built output, and the
# workspace (the demo's takes its place).
NOT_MIRRORED = {".git", ".pumpfleet", ".site", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<name>[a-z]+)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the directives above it."""

    page: str
    line: int
    lang: str
    code: str
    skip: tuple[str, str] | None = None
    realdata: bool = False
    expect: tuple[str, ...] = ()
    timeout: int = DEFAULT_TIMEOUT
    problems: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md, then the manual's pages in the order of mkdocs.yml's nav."""
    return [README, *(DOCS / p for p in nav_pages())]


def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    return list(walk(config["nav"]))


def parse_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of a Markdown page, with its directives."""
    page = str(path.relative_to(root))
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, fence = i, len(m["indent"]), m["fence"]
        end = start + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = "\n".join(line[indent:] for line in lines[start + 1 : end])
        blocks.append(_block(page, start + 1, m["lang"], code, _directives(lines, start)))
        i = end + 1
    return blocks


def _directives(lines: list[str], fence: int) -> list[tuple[str, str | None]]:
    found = []
    j = fence - 1
    while j >= 0 and (d := DIRECTIVE.match(lines[j])):
        found.append((d["name"], d["arg"]))
        j -= 1
    return found[::-1]


def _block(page: str, line: int, lang: str, code: str, directives: Any) -> Block:
    problems: list[str] = []
    skip, realdata, expect, timeout = None, False, [], DEFAULT_TIMEOUT
    if lang != RUN_LANG and lang not in OTHER_LANGS:
        problems.append(
            f"fence language {lang or '(none)'!r}: shell commands go in ```bash (run by "
            "this test), output in ```text, config in ```yaml or ```json"
        )
    for name, arg in directives:
        if name == "skip":
            kind, _, why = (arg or "").partition(":")
            if kind.strip() not in SKIP_KINDS or not why.strip():
                problems.append(f"skip needs 'KIND: why' with KIND in {sorted(SKIP_KINDS)}")
            skip = (kind.strip(), why.strip())
        elif name == "realdata":
            realdata = True
        elif name == "expect" and arg:
            expect.append(arg)
        elif name == "timeout" and arg and arg.isdigit():
            timeout = int(arg)
        else:
            problems.append(f"unknown directive <!-- {name}: {arg} -->")
    if lang != RUN_LANG and (skip or realdata or expect):
        problems.append(f"directives above a ```{lang} block, which is never run")
    return Block(page, line, lang, code, skip, realdata, tuple(expect), timeout, tuple(problems))


ALL_BLOCKS = [b for p in pages() if p.exists() for b in parse_blocks(p)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang == RUN_LANG]


# --- the cheap checks -------------------------------------------------------------------


def test_readme_is_a_front_page() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; the manual is under docs/"


def test_every_page_is_in_the_nav() -> None:
    listed = nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(listed) == on_disk, "mkdocs.yml's nav and the pages under docs/ differ"
    assert len(set(listed)) == len(listed), "a page is twice in the nav"


def test_code_blocks_follow_the_convention() -> None:
    problems = [f"{b.id}: {p}" for b in ALL_BLOCKS for p in b.problems]
    assert not problems, "\n".join(problems)
    assert SHELL_BLOCKS, "no ```bash block found"


def test_the_checks_catch_drift(tmp_path: Path) -> None:
    """What a skipped block is still checked for, and the fence rules, do fail."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- skip: long: a test of the test -->\n```bash\n"
        "pumpfleet train --epoks 3\n"
        "python -m ray_jobs.no_such_job\n"
        "kubectl apply -f cluster/k8s/no-such.yaml\n"
        "make no-such-target\n"
        "pumpfleet-edge run --config agent.yaml   # fine\n"
        "```\n\n```sh\nls\n```\n\n<!-- skip: later -->\n```bash\nls\n```\n"
    )
    blocks = [replace(b, page="page.md") for b in parse_blocks(page, root=tmp_path)]
    skipped, sh, unknown = blocks
    with pytest.raises(AssertionError) as caught:
        static_check(skipped)
    said = str(caught.value)
    assert "unrecognized arguments: --epoks 3" in said
    assert "python -m ray_jobs.no_such_job: no such module" in said
    assert "cluster/k8s/no-such.yaml: no such file" in said
    assert "make no-such-target: no such target" in said
    assert "pumpfleet-edge" not in said
    assert sh.problems and "fence language 'sh'" in sh.problems[0]
    assert unknown.problems and "KIND: why" in unknown.problems[0]


def test_site_builds_strict(tmp_path: Path) -> None:
    """What `make docs` runs: a broken link, anchor or nav entry fails the build."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    out = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]


# --- the shell blocks -------------------------------------------------------------------


def _params() -> list[Any]:
    params = []
    for b in SHELL_BLOCKS:
        marks = [] if b.skip else [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow]
        if b.realdata:
            marks.append(pytest.mark.realdata)
        params.append(pytest.param(b, id=b.id, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_doc_block(block: Block, request: pytest.FixtureRequest) -> None:
    if block.skip:
        static_check(block)
        kind, why = block.skip
        pytest.skip(f"{block.id}: {SKIP_KINDS[kind]}: {why}")
    if block.realdata and not SHARED_DATA.is_dir():
        pytest.skip(f"public data not found at {SHARED_DATA}")
    sessions: PageSessions = request.getfixturevalue("page_sessions")
    session = sessions.open(block.page, _workspace(request))
    if session.failed:
        pytest.skip(f"an earlier block of this page failed ({session.failed})")
    code, output = session.run(block)
    if code != 0:
        session.failed = block.id
    assert code == 0, (
        f"{block.id} exited {code}:\n{block.code}\n--- output (tail) ---\n{output[-4000:]}"
    )
    missing = [e for e in block.expect if e not in output]
    if missing:
        session.failed = block.id
    assert not missing, f"{block.id}: {missing} not in its output:\n{output[-4000:]}"


def _workspace(request: pytest.FixtureRequest) -> Path:
    """The demo's workspace; DOCS_WORKSPACE=.pumpfleet (after `make demo`) uses yours
    instead, to try a page in seconds (its blocks change that workspace as they would
    change the demo's)."""
    if os.environ.get("DOCS_WORKSPACE"):
        return Path(os.environ["DOCS_WORKSPACE"]).resolve()
    demo: DemoRun = request.getfixturevalue("demo_run")
    return demo.settings.home


class PageSession:
    """One page's terminal: a mirrored working folder, and the state its blocks leave."""

    def __init__(self, page: str, folder: Path, home: Path) -> None:
        self.page = page
        self.folder = folder
        self.state = folder.parent / f"{folder.name}.state"
        self.groups: list[int] = []
        self.failed: str | None = None
        folder.mkdir(parents=True)
        for entry in ROOT.iterdir():
            if entry.name not in NOT_MIRRORED:
                (folder / entry.name).symlink_to(entry)
        (folder / ".pumpfleet").symlink_to(home)
        # A user's shell, but the ports stay the test worker's share (tests/conftest.py:
        # worker_port_range): a page's servers run beside the other worker's.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PUMPFLEET_") and k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")
        }
        if ports.RANGE_VAR in os.environ:
            env[ports.RANGE_VAR] = os.environ[ports.RANGE_VAR]
        env["PUMPFLEET_HOME"] = str(folder / ".pumpfleet")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PORT"] = str(_free_port())
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    def run(self, block: Block) -> tuple[int, str]:
        script = self.folder.parent / f"{self.folder.name}-{block.line}.sh"
        log = self.folder.parent / f"{self.folder.name}-{block.line}.log"
        state = shlex.quote(str(self.state))
        script.write_text(
            "set -euo pipefail\n"
            f"if [ -f {state} ]; then source {state}; fi\n"
            f"trap 'export -p > {state}' EXIT\n"
            f"{block.code}\n"
        )
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.groups.append(proc.pid)
            try:
                code = proc.wait(timeout=block.timeout)
            except subprocess.TimeoutExpired:
                _stop_group(proc.pid)
                proc.wait()
                code = -1
        output = log.read_text(errors="replace")
        if code == -1:
            output += f"\n[timed out after {block.timeout} s]"
        return code, output

    def close(self) -> None:
        """Stop whatever the page's blocks left running (a server in the background)."""
        for pgid in self.groups:
            _stop_group(pgid)
        self.groups.clear()


class PageSessions:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.current: PageSession | None = None

    def open(self, page: str, home: Path) -> PageSession:
        if self.current is None or self.current.page != page:
            self.close()
            name = re.sub(r"\W+", "-", page).strip("-")
            self.current = PageSession(page, self.base / name, home)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


@pytest.fixture(scope="session")
def page_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageSessions]:
    sessions = PageSessions(tmp_path_factory.mktemp("docs"))
    yield sessions
    sessions.close()


def _stop_group(pgid: int) -> None:
    """SIGTERM to a block's process group (it is its own session), SIGKILL if it stays."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


# --- what can be checked of a block that is not run ----------------------------------------


def static_check(block: Block) -> None:
    """A skipped block still may not name a command, option, module, make target or file
    that does not exist."""
    problems = []
    for words in _commands(block.code):
        problems += _check_command(words)
        problems += [
            f"{w}: no such file in the repository"
            for w in words
            if _repo_path(w) and not any(ROOT.glob(w.rstrip("/")))
        ]
    assert not problems, f"{block.id}:\n" + "\n".join(problems)


def _commands(code: str) -> Iterator[list[str]]:
    """Each simple command of a block as words (comments dropped, continuations joined,
    split at ; && || |)."""
    text = re.sub(r"\\\n", " ", code)
    for line in text.splitlines():
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
        except ValueError:
            continue
        command: list[str] = []
        for w in [*words, ";"]:
            if w and set(w) <= set(";&|"):
                if command:
                    yield command
                command = []
            else:
                command.append(w)


def _check_command(words: list[str]) -> list[str]:
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]  # VAR=value before a command
    if not words:
        return []
    head = Path(words[0]).name
    if head in ("pumpfleet", "pumpfleet-edge"):
        if any(_placeholder(w) for w in words):
            return []
        return _parses(head, words[1:])
    if head.startswith("python") and words[1:2] == ["-m"] and len(words) > 2:
        if importlib.util.find_spec(words[2].split(".")[0]) is None:
            return [f"python -m {words[2]}: no such module"]
        if importlib.util.find_spec(words[2]) is None:
            return [f"python -m {words[2]}: no such module"]
        return []
    if head == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        return [f"make {t}: no such target" for t in words[1:] if t not in targets]
    if head == "ray" and "--" in words:
        return _check_command(words[words.index("--") + 1 :])
    return []


def _placeholder(word: str) -> bool:
    return "$" in word or "<" in word or "..." in word


def _parses(prog: str, argv: list[str]) -> list[str]:
    if prog == "pumpfleet":
        from pumpfleet_cli.main import build_parser
    else:
        from edge_agent.cli import build_parser
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            return [f"{prog} {shlex.join(argv)}: {err.getvalue().strip()}"]
    return []


def _repo_path(word: str) -> bool:
    """A word naming a path in the repository, like cluster/k8s/base/ or examples/x.yaml."""
    if _placeholder(word) or "://" in word or "*" in word:
        return False
    first = word.split("/")[0]
    return "/" in word and first not in ("", ".", "..") and (ROOT / first).exists()
