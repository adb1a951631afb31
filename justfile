# netra-actors task runner. Use it through ./run, which prepares .venv first:
#   ./run chat | ./run test | ./run lint | ./run bench ... | ./run docs

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments are passed to the shell as "$@" (safe with spaces/quotes).
set positional-arguments

venv := ".venv/bin"
py := venv / "python"
pytest := venv / "pytest"
ruff := venv / "ruff"
mypy := venv / "mypy"
netra := venv / "netra-actors"

# list the recipes
default:
    @{{ just_executable() }} --justfile {{ justfile() }} --list

# start the chat server (args go to `netra-actors serve`)
chat *ARGS:
    @{{ netra }} serve "$@"

# run the console demo
demo:
    {{ py }} examples/console_demo.py

# lint + typecheck + the test suite (args go to pytest, e.g. `./run test -k actor -x`)
test *ARGS: lint typecheck
    {{ pytest }} "$@"

# check formatting and lint rules
lint:
    {{ ruff }} format --check .
    {{ ruff }} check .

# auto-format and apply safe lint fixes
fmt:
    {{ ruff }} format .
    {{ ruff }} check --fix .

# static type check (mypy --strict; paths come from pyproject.toml)
typecheck:
    {{ mypy }}

# run a benchmark scenario (args go to `python -m benchmarks`, e.g. `./run bench peers --users 1000`)
bench *ARGS:
    {{ py }} -m benchmarks "$@"

# list the docs with their titles
docs:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    files=(README.md docs/*.md)
    for f in "${files[@]}"; do
        [ -f "$f" ] || continue
        title=$(grep -m1 '^#' "$f" | sed -E 's/^#+[[:space:]]*//' || true)
        printf '%-36s %s\n' "$f" "${title:-(no heading)}"
    done
