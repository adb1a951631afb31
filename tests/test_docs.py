"""Docs that run: every code block of README.md and docs/*.md is checked, by one rule.

What a ```python block is, is decided by the HTML comment on the line right before its fence (the
same rule is in docs/testing.md, "Docs that run"):

``<!-- from PATH -->``
    a quote: the block is a verbatim copy of part of PATH (leading and trailing blank lines
    aside), and PATH itself runs in a test: ``examples/X.py`` must be named by a test file in
    ``tests/``; ``tests/**/test_*.py`` is collected by pytest.
``<!-- signature -->``
    the shape of a call, not code to run (``async with na.open_runtime(config, agents=[A, B])``):
    it must compile (top-level ``await`` allowed), must not be a complete program, and every
    ``na.NAME(...)`` call and ``def NAME(...)`` in it uses only parameters ``na.NAME`` has.
``<!-- server: PORT -->``
    a complete program that serves until Ctrl+C: it is started in a temporary directory, must
    answer ``GET http://127.0.0.1:PORT/healthz`` with 200, then gets SIGINT and must exit 0 with
    no Traceback on stderr; twice, the second time on the first one's database.
``<!-- prelude: NAME -->``
    a fragment that runs after the code of ``PRELUDES[NAME]`` (below): the imports and helpers
    its prose assumes, and a driver that exercises what the fragment defines.
no comment, and the block is a complete program
    (it calls ``na.run(``, ``netra_actors.run(``, ``asyncio.run(`` or ``trio.run(``, or has
    ``if __name__ == "__main__"``): it is written to a temporary directory and run there as a
    script, twice (its SQLite files land there; a second run on them must stop too). Each run
    must exit 0 within 60 s with no Traceback on stderr, and print what ``OUTPUTS`` expects.
no comment, and not a complete program
    a fragment that runs alone, as pasted (once, in a temporary directory), with the same checks.

Any other comment right before a python block is an error, so is a prelude or a marker where it
does not fit. ```sh/```bash blocks are not run, but every ``python PATH.py`` in them must name a
file of the repository.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import netra_actors as na

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
TIMEOUT = 60.0

PROGRAM = re.compile(
    r"\b(?:na|netra_actors|asyncio|trio)\.run\(|__name__\s*==\s*[\"']__main__[\"']"
)
MARKER = re.compile(
    r"from (?P<source>\S+)|signature|server: (?P<port>\d+)|prelude: (?P<prelude>\w+)"
)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "bash", "shell", "console"}

# ---------------------------------------------------------------------------------- preludes

#: Fragments showing agents: the snippets of docs/agents.md assume ``import netra_actors as
#: na`` and name a model client and shop tools of the reader's; these are stand-ins.
AGENT_BEFORE = '''
import trio

import netra_actors as na
from netra_actors.testing import MemoryStore


async def model_tokens(input):
    """A stand-in model client: streams the input back, a word at a time."""
    for word in str(input).split():
        await trio.sleep(0)
        yield word + " "


def create_order(cart):
    return {"id": "o_1", "total": 1250 * len(cart)}


def charge(order_id, cents):
    return {"order": order_id, "charged": cents}


def send_receipt(order_id):
    return "sent"
'''

#: ...then every agent class the fragment defined runs once, on a MemoryStore: an input it asks
#: for is answered, and the run must complete.
AGENT_AFTER = """

async def _drive() -> None:
    agents = [
        value
        for value in list(globals().values())
        if isinstance(value, type) and issubclass(value, na.types.AgentBase)
        and value.__module__ == "__main__"
    ]
    assert agents, "the fragment defines no agent class"
    async with na.open_runtime(agents=agents, store=MemoryStore()) as runtime:
        for agent in agents:
            async with await runtime.subscribe("alice") as events:
                run_id = await runtime.start_run("alice", agent.name, {"cart": ["tea", "cups"]})
                async for event in events:
                    print(event.seq, event.event, event.data)
                    if event.run_id != run_id:
                        continue
                    if event.event == "input_requested":
                        await runtime.send_input("alice", run_id, "Lisbon")
                    if event.event == "run_state":
                        if na.RunState(event.data["state"]).is_terminal:
                            break
            info = await runtime.wait_run("alice", run_id)
            assert info.state is na.RunState.COMPLETED, info
            print(agent.name, info.state.value, info.result)


trio.run(_drive)
"""

#: A schema migration step of docs/store.md: the imports of ``_store/_schema.py``, then the
#: step is applied to a database of the current schema, and the column it adds must be there.
MIGRATION_BEFORE = """
from sqlalchemy import Connection, text
"""

MIGRATION_AFTER = """

import sqlalchemy

import netra_actors as na


class Nop(na.Agent):
    name = "nop"

    async def run(self, ctx, input):
        return None


async def _create() -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url("netra.db"))
    async with na.open_runtime(config, agents=[Nop]):
        pass


na.run(_create)
engine = sqlalchemy.create_engine("sqlite:///netra.db")
with engine.begin() as conn:
    _v7_to_v8(conn)
columns = {column["name"] for column in sqlalchemy.inspect(engine).get_columns("netra_runs")}
assert "parent_run_id" in columns, columns
print("migrated:", sorted(columns))
"""

PRELUDES: dict[str, tuple[str, str]] = {
    "agent": (AGENT_BEFORE, AGENT_AFTER),
    "migration": (MIGRATION_BEFORE, MIGRATION_AFTER),
}

#: What a complete program must print (regular expressions, searched line by line), found by
#: its document and a line of its code: its purpose, where the output shows it.
OUTPUTS: dict[tuple[str, str], list[str]] = {
    ("README.md", "class Echo(na.Agent):"): [
        r"^\d+ tool_completed \{'tool': 'shout', .*'result': 'HELLO'",
        r"^\d+ run_state \{'state': 'completed'",
    ],
    ("docs/embedding.md", "class Echo(na.Agent):"): [r"^completed hello$"],
    # Without a model server on 127.0.0.1:11434 the run fails (the program says so).
    ("docs/agents.md", "make_llm_agent("): [r"^(completed \{'text'|failed error: )"],
    ("docs/observability.md", "class Flaky(na.Agent):"): [r"^alice 1 flaky ValueError$"],
    ("docs/observability.md", "class Weather(na.Agent):"): [
        r"^netra\.tool 4bf92f3577b34da6a3ce929d0e0e4736 \{'netra\.tool\.name': 'forecast'",
        r"^netra\.attempt 4bf92f3577b34da6a3ce929d0e0e4736 .*'netra\.outcome': 'completed'",
        r"^netra\.run 4bf92f3577b34da6a3ce929d0e0e4736 .*'netra\.state': 'completed'",
    ],
}


# ------------------------------------------------------------------------------ the blocks


@dataclass(frozen=True)
class Block:
    doc: str  # relative to the repository: "README.md", "docs/agents.md"
    line: int  # of the opening fence
    lang: str
    code: str  # without the fence's indentation
    marker: str | None  # the HTML comment on the line before the fence

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_program(self) -> bool:
        return PROGRAM.search(self.code) is not None


def read_blocks(doc: str) -> list[Block]:
    blocks = []
    lines = (ROOT / doc).read_text().splitlines()
    n = 0
    while n < len(lines):
        fence = FENCE.match(lines[n])
        if not fence:
            n += 1
            continue
        indent, start = fence["indent"], n
        comment = COMMENT.match(lines[n - 1]) if n else None
        body: list[str] = []
        n += 1
        while n < len(lines) and lines[n].strip() != "```":
            body.append(lines[n].removeprefix(indent))
            n += 1
        assert n < len(lines), f"{doc}:{start + 1}: a code block is never closed"
        code = "\n".join(body).strip("\n") + "\n"
        marker = comment["text"] if comment else None
        blocks.append(Block(doc, start + 1, fence["lang"], code, marker))
        n += 1
    return blocks


BLOCKS = [block for doc in DOCS for block in read_blocks(doc)]
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang in PYTHON]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]


def run_script(code: str, cwd: Path, what: str) -> str:
    """Run ``code`` as a script in ``cwd``: it must exit 0 with no Traceback. Its stdout."""
    script = cwd / "snippet.py"
    script.write_text(code)
    try:
        proc = subprocess.run(
            [sys.executable, script.name],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not stop within {TIMEOUT:.0f} s:\n{exc.stdout!r}\n{exc.stderr!r}")
    output = f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stderr, output
    return proc.stdout


def expected_output(block: Block) -> list[str]:
    return [
        pattern
        for (doc, needle), patterns in OUTPUTS.items()
        if doc == block.doc and needle in block.code
        for pattern in patterns
    ]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_then_interrupt(block: Block, cwd: Path, port: int) -> None:
    """Start the server program; it must answer /healthz, then stop on SIGINT with status 0."""
    (cwd / "server.py").write_text(block.code)
    proc = subprocess.Popen(
        [sys.executable, "server.py"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for loopback
    health: object = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.loads(response.read())
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    output = f"{block.id} exited {proc.returncode}:\n{stdout}\n{stderr}"
    assert isinstance(health, dict), f"{block.id} never answered /healthz\n{output}"
    assert health["status"] == "ok", health
    assert proc.returncode == 0, output
    assert "Traceback" not in stderr, output


def package_attribute(node: ast.expr) -> str | None:
    """``"policies.RestartPolicy"`` for ``na.policies.RestartPolicy`` (or ``netra_actors.…``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if parts and isinstance(node, ast.Name) and node.id in ("na", "netra_actors"):
        return ".".join(reversed(parts))
    return None


def check_signature(block: Block) -> None:
    """The block's ``na.NAME(...)`` calls (``na.policies.NAME(...)`` too) and ``def NAME(...)``
    match the parameters of ``na.NAME``."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(block.code, block.id, "exec", flags=flags)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (dotted := package_attribute(node.func)):
            name, used = dotted, [k.arg for k in node.keywords if k.arg]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and hasattr(na, node.name):
            args = node.args
            name = node.name
            used = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
            used += [a.arg for a in (args.vararg, args.kwarg) if a]
        else:
            continue
        target: object = na
        for part in name.split("."):
            assert hasattr(target, part), f"{block.id}: netra_actors has no {name}"
            target = getattr(target, part)
        params = inspect.signature(target).parameters  # type: ignore[arg-type]
        unknown = [arg for arg in used if arg not in params]
        assert not unknown, f"{block.id}: na.{name} has no parameter {unknown} ({list(params)})"


# ------------------------------------------------------------------------------- the tests


def test_the_readme_has_a_program() -> None:
    assert [b for b in PYTHON_BLOCKS if b.doc == "README.md" and b.is_program and not b.marker]


def test_every_expected_output_names_one_program() -> None:
    for (doc, needle), _ in OUTPUTS.items():
        found = [b for b in PYTHON_BLOCKS if b.doc == doc and needle in b.code and b.is_program]
        assert len(found) == 1, f"OUTPUTS[{doc!r}, {needle!r}] matches {len(found)} programs"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block(block: Block, tmp_path: Path) -> None:
    marker = MARKER.fullmatch(block.marker) if block.marker else None
    assert block.marker is None or marker, f"{block.id}: unknown marker <!-- {block.marker} -->"
    if marker and marker["source"]:  # a quote of a file that a test runs
        source = marker["source"]
        assert (ROOT / source).is_file(), f"{block.id}: {source} does not exist"
        assert block.code.strip("\n") in (ROOT / source).read_text(), (
            f"{block.id}: the block is not a verbatim copy of part of {source}"
        )
        if source.startswith("tests/"):
            assert re.fullmatch(r"test_\w+\.py", Path(source).name), f"{source} is not a test"
        else:
            assert source.startswith("examples/"), f"{block.id}: quote examples/ or tests/"
            tests = [p for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
            assert any(Path(source).name in p.read_text() for p in tests), (
                f"{block.id}: no test runs {source}"
            )
        return
    if marker and block.marker == "signature":
        compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        assert not block.is_program, f"{block.id}: a complete program must run, not be a signature"
        check_signature(block)
        return
    compile(block.code, block.id, "exec")  # a script: no top-level await
    if marker and marker["port"]:
        assert block.is_program, f"{block.id}: <!-- server --> marks a complete program"
        port = int(marker["port"])
        if port_in_use(port):
            pytest.skip(f"port {port} is in use (another server is running there)")
        for _ in range(2):
            serve_then_interrupt(block, tmp_path, port)
        return
    if marker and marker["prelude"]:
        assert not block.is_program, f"{block.id}: a complete program takes no prelude"
        assert marker["prelude"] in PRELUDES, f"{block.id}: no prelude {marker['prelude']!r}"
        before, after = PRELUDES[marker["prelude"]]
        run_script(before + "\n" + textwrap.dedent(block.code) + after, tmp_path, block.id)
        return
    if not block.is_program:  # a fragment that runs alone
        run_script(textwrap.dedent(block.code), tmp_path, block.id)
        return
    for _ in range(2):  # twice: a second run on the same database must stop too
        out = run_script(block.code, tmp_path, block.id)
        for pattern in expected_output(block):
            assert re.search(pattern, out, re.M), f"{block.id} did not print /{pattern}/:\n{out}"


def test_the_readme_program_stops_when_its_run_fails(tmp_path: Path) -> None:
    """The README's loop ends on any terminal state: here its tool fails on every attempt."""
    (program,) = [b for b in PYTHON_BLOCKS if b.doc == "README.md" and b.is_program]
    broken = program.code.replace("return text.upper()", 'raise OSError("the tool is down")')
    assert broken != program.code, "the README's tool changed: update this test"
    proc = subprocess.run(
        [sys.executable, "-c", broken],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "'error': 'OSError: the tool is down'" in proc.stdout
    assert re.search(r"^\d+ run_state \{'state': 'failed'", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.id for b in SHELL_BLOCKS])
def test_shell_block_names_scripts_that_exist(block: Block) -> None:
    for script in re.findall(r"\bpython[\d.]*\s+([\w./-]+\.py)\b", block.code):
        assert (ROOT / script).is_file(), f"{block.id}: {script} does not exist"


def test_store_md_states_the_schema_version_and_describes_every_table() -> None:
    from netra_actors._store._schema import SCHEMA_VERSION, metadata

    store = (ROOT / "docs" / "store.md").read_text()
    assert f"`na.types.SCHEMA_VERSION`, now `{SCHEMA_VERSION}`" in store
    described = set(re.findall(r"^(?:Version \d+ added )?`(netra_\w+)` —", store, re.MULTILINE))
    assert described == set(metadata.tables)


def test_server_md_describes_every_gateway_config_field() -> None:
    import attrs

    from netra_actors.gateway import GatewayConfig

    server = (ROOT / "docs" / "server.md").read_text()
    table = server.split("`GatewayConfig` holds everything the gateway needs", 1)[1].split("\n\n")[
        1
    ]
    described = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", table, re.MULTILINE))
    names = {name for pair in described for name in pair if name}
    assert names == {field.name for field in attrs.fields(GatewayConfig)}


def test_every_doc_states_the_user_limits_of_the_code() -> None:
    from netra_actors._runtime import MAX_USER_ID
    from netra_actors.gateway._tokens import MAX_USER_LENGTH

    runtime_rule = f"{MAX_USER_ID} characters"
    token_rule = f"1–{MAX_USER_LENGTH} printable characters"
    for doc in ("docs/agents.md", "docs/server.md", "docs/protocol.md"):
        text = " ".join((ROOT / doc).read_text().split())
        assert runtime_rule in text, doc
        assert token_rule in text, doc
    page = (ROOT / "netra_actors" / "_static" / "index.html").read_text()
    assert (
        f'id="signin-name" name="username" autocomplete="username" maxlength="{MAX_USER_LENGTH}"'
        in page
    )


def test_embedding_md_names_every_runtime_method() -> None:
    embedding = " ".join((ROOT / "docs" / "embedding.md").read_text().split())
    runtime_table = embedding.split("`Runtime`'s methods;", 1)[1].split("## ", 1)[0]
    for name, _ in inspect.getmembers(na.Runtime, inspect.isfunction):
        if not name.startswith("_") and name != "aclose":  # aclose: open_runtime's exit does it
            assert f"`{name}(" in runtime_table or f"`await {name}(" in runtime_table, name
    embedded = embedding.split("`EmbeddedRuntime` offers these methods", 1)[1].split("\n\n")[0]
    for name, _ in inspect.getmembers(na.EmbeddedRuntime, inspect.isfunction):
        if not name.startswith("_"):
            assert f"`{name}" in embedded, name


INTERNAL = re.compile(
    r"shared/design|shared/measurements|/work/|\bthe (?:design |architecture )?brief\b|brief's"
    r"|\bissues? \d|\bthe contract\b|contract's",
    re.IGNORECASE,
)


@pytest.mark.parametrize("doc", DOCS)
def test_public_docs_stand_on_their_own(doc: str) -> None:
    """No public doc sends its reader to the project's internal papers (design briefs, issues)."""
    text = " ".join((ROOT / doc).read_text().split())
    assert INTERNAL.findall(text) == [], doc
