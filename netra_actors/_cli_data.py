"""``netra-actors erase-user`` and ``netra-actors export-user``: a user's data, from the shell.

* ``erase-user USER --db URL [--yes]`` deletes every row of the user (``Runtime.erase_user``).
  The command is a short-lived node of the cluster: it opens a runtime on the database, and the
  erasure reaches the user's owner like any command — if a server owns the user, through the
  store's inbox (that server erases, under its lease, and closes the user's sockets with 4410);
  if nobody does, this process takes the user's lease and erases under it. Either way the
  erasure is one fenced unit: no late write of an old owner lands after it. Without ``--yes`` it
  asks for the user id again on the terminal.
* ``export-user USER --db URL [--out FILE]`` writes the user's whole log as JSON lines, one
  event per line in the wire's ``event`` frame shape, in ``seq`` order, page by page (bounded
  memory); progress on stderr every :data:`PROGRESS_EVERY` events.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ._bridge import run
from ._config import RuntimeConfig, database_url
from ._exceptions import ConfigError, NetraError
from ._runtime import open_runtime

PROGRESS_EVERY = 10_000


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RuntimeConfig:
    try:
        return RuntimeConfig(database_url=database_url(args.db), gc_threshold=None)
    except ConfigError as exc:
        parser.error(f"--db {args.db}: {exc}")


def erase_user(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = _config(args, parser)
    user: str = args.user
    if not args.yes:
        print(
            f"This deletes every row of user {user!r} (events, runs, threads) for good.\n"
            "Type the user id again to confirm: ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if sys.stdin.readline().strip() != user:
            print("not confirmed: nothing was erased", file=sys.stderr)
            return 1

    async def erase() -> None:
        async with open_runtime(config) as runtime:
            await runtime.erase_user(user)

    try:
        run(erase)
    except NetraError as exc:
        print(f"netra-actors erase-user: error: {exc}", file=sys.stderr)
        return 1
    print(f"erased user {user!r}", file=sys.stderr)
    return 0


def export_user(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = _config(args, parser)
    user: str = args.user

    async def export(out: TextIO) -> int:
        count = 0
        async with open_runtime(config) as runtime:
            async for event in runtime.export_user(user):
                out.write(event.wire_json())
                out.write("\n")
                count += 1
                if count % PROGRESS_EVERY == 0:
                    print(f"{count} events…", file=sys.stderr, flush=True)
        return count

    try:
        if args.out is None:
            count = run(export, sys.stdout)
        else:
            with open(args.out, "w", encoding="utf-8") as out:
                count = run(export, out)
    except NetraError as exc:
        print(f"netra-actors export-user: error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count} events of user {user!r}", file=sys.stderr)
    return 0
