"""Loading your code by name: ``MODULE:ATTRIBUTE``, the way uvicorn loads ``module:app``.

``netra-actors serve --agents MODULE:ATTRIBUTE`` and ``--auth MODULE:CALLABLE`` (and
``examples/fastapi_app.py``'s ``NETRA_AGENTS``/``NETRA_AUTH``) name objects in your modules:
:func:`load_agents` and :func:`load_sign_in` import them — with the current directory first on
``sys.path``, so a module next to where the server starts is found — and check them. Whatever
is wrong (no such module, an import that fails, no such attribute, not agents, a callable that
raises, two agents of one name, a default that is not among them) is a :class:`ConfigError`
whose message is one line naming the spec, for the command to print and exit 2.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence

import orjson

from .._agent import AgentBase, AgentRegistry
from .._exceptions import ConfigError
from ._sign_in import Authenticate


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_object(spec: str, flag: str) -> object:
    """The object ``spec`` (``MODULE:ATTRIBUTE``, the attribute may be dotted) names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{flag} {spec}: expected MODULE:ATTRIBUTE, e.g. myapp.agents:AGENTS")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(
                f"{flag} {spec}: no module named {module_name!r} (from {cwd})"
            ) from None
        raise ConfigError(
            f"{flag} {spec}: importing {module_name} failed: {_first_line(exc)}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{flag} {spec}: importing {module_name} failed: {_first_line(exc)}"
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{flag} {spec}: {module_name} has no attribute {attribute!r}"
            ) from None
    return obj


def _agent_classes(obj: object, spec: str, flag: str) -> list[type[AgentBase]]:
    if callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"{flag} {spec}: calling it failed: {_first_line(exc)}") from None
    if isinstance(obj, type | str | bytes) or not isinstance(obj, Iterable):
        raise ConfigError(
            f"{flag} {spec}: expected a list of agent classes (or a callable returning one), "
            f"got {type(obj).__name__}"
        )
    agents = list(obj)
    for cls in agents:
        if not (isinstance(cls, type) and issubclass(cls, AgentBase)):
            raise ConfigError(
                f"{flag} {spec}: {cls!r} is not an agent class (a subclass of Agent or "
                "ThreadedAgent)"
            )
        try:
            orjson.dumps(cls.example_input)
        except TypeError:
            raise ConfigError(
                f"{flag} {spec}: {cls.__qualname__}.example_input is not a JSON value"
            ) from None
    return agents


def load_agents(specs: Sequence[str], default: str | None = None) -> list[type[AgentBase]]:
    """The agent classes the ``specs`` name, in order, checked as a runtime will check them
    (names, no two alike, ``default`` among them)."""
    agents: list[type[AgentBase]] = []
    for spec in specs:
        agents.extend(_agent_classes(load_object(spec, "--agents"), spec, "--agents"))
    if not agents:
        raise ConfigError(f"--agents {' '.join(specs)}: no agents")
    check_agents(agents, default)
    return agents


def check_agents(agents: Sequence[type[AgentBase]], default: str | None) -> None:
    """Raise a one-line :class:`ConfigError` unless ``agents`` can be served with ``default``."""
    try:
        AgentRegistry(agents, default=default)
    except ConfigError as exc:
        if default is not None and default not in {cls.name for cls in agents}:
            names = ", ".join(cls.name for cls in agents)
            raise ConfigError(
                f"--default-agent {default}: not among the agents served ({names})"
            ) from None
        raise ConfigError(f"--agents: {exc}") from None


def load_sign_in(spec: str) -> Authenticate:
    """The sign-in function ``spec`` (``MODULE:CALLABLE``) names."""
    obj = load_object(spec, "--auth")
    if not callable(obj):
        raise ConfigError(f"--auth {spec}: expected a sign-in function, got {type(obj).__name__}")
    return obj
