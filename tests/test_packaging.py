"""The built wheel, installed in a fresh virtualenv, is the runtime without the dev tools.

Builds the wheel from the working tree (``pip wheel --no-deps``), checks what it ships and its
metadata (version, bounded requirements, extras), creates a venv from the interpreter running the
tests and ``pip install``s the wheel there (dependencies from the package index; pip's cache is
used). Then, in that venv: ``netra-actors --version``, ``import netra_actors`` (from the venv, not
this tree), no dev tools, ``netra-actors token``, a real ``netra-actors serve`` answering
``/healthz`` and stopping on SIGTERM, the clear error for PostgreSQL without the ``postgres``
extra, docs/server.md's walkthrough (your agent behind your JWT sign-in, a WebSocket turn, the
inspector's JSON) with the ``auth`` extra, and finally the ``asgi`` extra installing on top.

Skips (with the reason) only when the package index is unreachable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import attrs
import pytest

from netra_actors.gateway import verify_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a cold pip cache downloads a lot

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]
SECRET = "packaging-test-secret-0123456789abcdef"
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis")
EXTRAS_ONLY = (
    "asyncpg",
    "httpx",
    "fastapi",
    "uvicorn",
    "opentelemetry-api",
)  # in extras, not in the runtime


@attrs.frozen
class Venv:
    path: Path
    wheel: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.path,  # not the working tree: its netra_actors must not be importable
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin("python"), "-c", code)


def _shown(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _index_url() -> str:
    """The package index pip uses (``$PIP_INDEX_URL``, pip's config, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        url = got.stdout.strip() if got.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NETRA_HOME"] = str(home)  # never the user's ~/.netra-actors
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def index() -> None:
    """Skip unless the package index answers (building needs hatchling, installing the rest)."""
    url = f"{_index_url()}/pip/"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read(1)
    except (OSError, urllib.error.URLError) as exc:
        pytest.skip(f"the package index is unreachable ({url}: {exc}); cannot build or install")


@pytest.fixture(scope="module")
def wheel(index: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"building the wheel failed: {_shown(proc)}"
    wheels = list(out.glob("netra_actors-*.whl"))
    assert len(wheels) == 1, f"expected one netra_actors wheel in {out}, got {wheels}"
    assert wheels[0].name.startswith(f"netra_actors-{VERSION}-"), wheels[0].name
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("venv")
    made = Venv(base / "venv", wheel, _env(base / "home"))
    proc = subprocess.run(
        [sys.executable, "-m", "venv", str(made.path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"python -m venv failed: {_shown(proc)}"
    proc = made.run(made.bin("python"), "-m", "pip", "install", "--quiet", str(wheel), timeout=240)
    assert proc.returncode == 0, f"pip install of the wheel failed: {_shown(proc)}"
    return made


# -- the wheel itself --------------------------------------------------------------------------


def test_the_wheel_ships_the_package_and_not_the_sources(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top <= {"netra_actors", f"netra_actors-{VERSION}.dist-info"}, (
        f"the wheel ships more than the package: {sorted(top)}"
    )
    for stray in ("tests/", "benchmarks/", "examples/", "docs/"):
        assert not any(name.startswith(stray) for name in names), f"the wheel ships {stray}"
    for needed in (
        "netra_actors/_static/index.html",
        "netra_actors/_static/inspector.html",
        "netra_actors/py.typed",
    ):
        assert needed in names, f"the wheel lacks {needed}"


def test_the_wheel_metadata_has_bounded_requirements_and_the_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta = Parser().parsestr(zf.read(f"netra_actors-{VERSION}.dist-info/METADATA").decode())
        entry_points = zf.read(f"netra_actors-{VERSION}.dist-info/entry_points.txt").decode()
    assert meta["Version"] == VERSION
    assert "netra-actors = netra_actors._cli:main" in entry_points, entry_points
    requires = meta.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    assert core, "the wheel declares no runtime requirements"
    for requirement in core:
        name = requirement.split(";")[0]
        assert ">=" in name, f"runtime requirement without a floor: {requirement}"
        if not name.startswith("attrs"):  # attrs is calendar-versioned (see pyproject.toml)
            assert "<" in name, f"runtime requirement without a ceiling: {requirement}"
    core_names = " ".join(core)
    for tool in (*DEV_TOOLS, *EXTRAS_ONLY):
        assert tool not in core_names, f"{tool} is a runtime requirement: {core}"

    def extra(name: str) -> list[str]:
        return [r for r in requires if r.replace('"', "'").endswith(f"extra == '{name}'")]

    provided = set(meta.get_all("Provides-Extra") or [])
    assert {"postgres", "asgi", "llm", "otel", "dev"} <= provided, provided
    assert any(r.startswith("asyncpg") for r in extra("postgres")), extra("postgres")
    assert any(r.startswith("fastapi") for r in extra("asgi")), extra("asgi")
    assert any(r.startswith("uvicorn[standard]") for r in extra("asgi")), extra("asgi")
    assert any(r.startswith("httpx") for r in extra("llm")), extra("llm")
    assert any(r.startswith("opentelemetry-api") for r in extra("otel")), extra("otel")
    dev = " ".join(extra("dev"))
    for needed in (*DEV_TOOLS, *EXTRAS_ONLY, "ag-ui-protocol"):
        assert needed in dev, f"the dev extra lacks {needed}: {dev}"


# -- installed in a fresh venv -----------------------------------------------------------------


def test_version_is_the_installed_distributions(venv: Venv) -> None:
    proc = venv.run(venv.bin("netra-actors"), "--version")
    assert proc.returncode == 0, _shown(proc)
    assert proc.stdout.strip() == f"netra-actors {VERSION}", _shown(proc)
    proc = venv.python(
        "import importlib.metadata, netra_actors; "
        "print(netra_actors.__version__, importlib.metadata.version('netra-actors'), "
        "netra_actors.__file__)"
    )
    assert proc.returncode == 0, f"import netra_actors failed in the venv: {_shown(proc)}"
    module_version, dist_version, where = proc.stdout.split()
    assert module_version == dist_version == VERSION, (
        f"netra_actors.__version__ {module_version}, installed {dist_version}, "
        f"pyproject.toml {VERSION}"
    )
    assert Path(where).is_relative_to(venv.path), f"imported from {where}, not the venv"


def test_the_runtime_comes_without_dev_tools_or_extras(venv: Venv) -> None:
    names = (*DEV_TOOLS, *EXTRAS_ONLY)
    proc = venv.python(
        "import importlib.util; "
        f"print(' '.join(n for n in {names!r} if importlib.util.find_spec(n) is not None))"
    )
    assert proc.returncode == 0, _shown(proc)
    assert proc.stdout.split() == [], f"installed without extras, the venv has {proc.stdout}"


def test_token_prints_a_token(venv: Venv) -> None:
    proc = venv.run(venv.bin("netra-actors"), "token", "alice", "--secret", SECRET)
    assert proc.returncode == 0, _shown(proc)
    claims = verify_token(SECRET.encode(), proc.stdout.strip(), now=time.time())
    assert claims.user == "alice"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_healthz_and_stops_on_sigterm(venv: Venv) -> None:
    port = _free_port()
    db = venv.path.parent / "smoke.db"
    log = venv.path.parent / "serve.log"
    command = [venv.bin("netra-actors"), "serve", "--port", str(port), "--db", str(db)]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--secret", SECRET],
            cwd=venv.path,
            env=venv.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        health: dict[str, object] | None = None
        while health is None:
            assert server.poll() is None, f"serve exited {server.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no /healthz within 30 s:\n{log.read_text()}"
            try:
                url = f"http://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200, response.status
                    health = json.loads(response.read())
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.2)
        assert health["status"] == "ok", health
        assert health["store"] == "ok", health
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop within 10 s of SIGTERM:\n{log.read_text()}")
        assert code == 0, f"serve exited {code} on SIGTERM:\n{log.read_text()}"
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_postgres_without_the_extra_says_which_extra(venv: Venv) -> None:
    proc = venv.run(
        venv.bin("netra-actors"),
        "serve",
        "--port",
        str(_free_port()),
        "--db",
        "postgresql+asyncpg://nobody@127.0.0.1:9/none",
        "--secret",
        SECRET,
        timeout=30,
    )
    assert proc.returncode != 0, _shown(proc)
    assert "pip install 'netra-actors[postgres]'" in proc.stderr, _shown(proc)
    assert "Traceback" not in proc.stderr, _shown(proc)


WALKTHROUGH = "## From `pip install` to your own agent behind your own sign-in"


def walkthrough_files() -> dict[str, str]:
    """The files docs/server.md's walkthrough has you write: each ```python block, named by the
    `name.py` its preceding paragraph mentions."""
    text = (ROOT / "docs" / "server.md").read_text()
    section = text.split(WALKTHROUGH, 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
    for before, block in zip(
        section.split("```python\n")[:-1], section.split("```python\n")[1:], strict=True
    ):
        name = re.findall(r"`(\w+\.py)`", before.strip().rsplit("\n\n", 1)[-1])[-1]
        files[name] = block.split("```", 1)[0]
    return files


def test_the_walkthrough_own_agent_own_sign_in_served_and_inspected(venv: Venv) -> None:
    """docs/server.md's walkthrough, as written: the ``auth`` extra, the two files it shows, the
    ``serve`` command it gives (from that directory), a JWT signed the way it says, then a
    WebSocket turn signed in by the JWT alone and the inspector's JSON with the admin token."""
    import jwt
    from websockets.sync.client import connect

    files = walkthrough_files()
    assert set(files) == {"myagents.py", "myauth.py"}, sorted(files)
    proc = venv.run(
        venv.bin("python"), "-m", "pip", "install", "--quiet", f"{venv.wheel}[auth]", timeout=240
    )
    assert proc.returncode == 0, f"pip install of the auth extra failed: {_shown(proc)}"
    app = venv.path.parent / "myapp"
    app.mkdir()
    for name, code in files.items():
        (app / name).write_text(code)
    port, secret, admin = _free_port(), "walkthrough-jwt-secret-0123456789abcdef", "a" * 32
    env = {**venv.env, "MY_JWT_SECRET": secret, "NETRA_ADMIN_TOKEN": admin}
    log = app / "serve.log"
    command = [venv.bin("netra-actors"), "serve", "--agents", "myagents:AGENTS"]
    command += ["--auth", "myauth:authenticate", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"serve exited {server.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no /healthz within 30 s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5):
                    break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.2)
        token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, secret, "HS256")
        with urllib.request.urlopen(base + "/agents", timeout=5) as response:
            agents = json.loads(response.read())
        assert [a["name"] for a in agents["agents"]] == ["support"], agents
        with connect(
            f"ws://127.0.0.1:{port}/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        ) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": 1}))
            welcome = json.loads(ws.recv(timeout=10))
            assert (welcome["type"], welcome["user_id"]) == ("welcome", "alice"), welcome
            ws.send(json.dumps({"type": "say", "id": "c1", "text": "Where is A-1?"}))
            said, state = [], None
            while state != "completed":
                frame = json.loads(ws.recv(timeout=10))
                for event in frame.get("events", [frame]):
                    if event.get("event") == "message":
                        said.append(event["data"].get("text"))
                    if event.get("event") == "run_state":
                        state = event["data"]["state"]
            assert any("Your order is on its way" in str(t) for t in said), said
        request = urllib.request.Request(
            base + "/inspector/api/runs?user=alice", headers={"Authorization": f"Bearer {admin}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            runs = json.loads(response.read())["runs"]
        assert [(r["agent"], r["state"]) for r in runs] == [("support", "completed")], runs
        forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, "x" * 40, "HS256")
        request = urllib.request.Request(
            base + "/agui", data=b"{}", headers={"Authorization": f"Bearer {forged}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_asgi_extra_installs_fastapi_and_uvicorn(venv: Venv) -> None:
    """Last: it adds to the venv the tests above check is lean."""
    proc = venv.run(
        venv.bin("python"), "-m", "pip", "install", "--quiet", f"{venv.wheel}[asgi]", timeout=240
    )
    assert proc.returncode == 0, f"pip install of the asgi extra failed: {_shown(proc)}"
    proc = venv.python("import fastapi, uvicorn, netra_actors")
    assert proc.returncode == 0, f"the asgi extra does not import: {_shown(proc)}"
