"""Every public name is exported, documented and typed; the library stays quiet by default."""

from __future__ import annotations

import inspect
import logging
import typing

import netra_actors as na
import netra_actors.testing as nt


def test_all_names_resolve_and_are_documented() -> None:
    for module in (na, nt):
        assert sorted(module.__all__) == sorted(set(module.__all__))
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_public_functions_and_methods_are_fully_annotated() -> None:
    def check(fn: object, where: str) -> None:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        for p in sig.parameters.values():
            if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            assert p.annotation is not inspect.Parameter.empty, f"{where}({p.name}) untyped"
        assert sig.return_annotation is not inspect.Signature.empty, f"{where} has no return type"

    for name in na.__all__:
        obj = getattr(na, name)
        if inspect.isfunction(obj):
            check(obj, name)
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                check(member, f"{name}.{attr}")


def test_the_package_is_marked_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("netra_actors").joinpath("py.typed").is_file()


def test_exceptions_share_one_base_and_commands_carry_wire_codes() -> None:
    for name in na.__all__:
        obj = getattr(na, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, na.NetraError), name
    codes = {
        cls.code
        for cls in (
            na.UnknownAgentError,
            na.UnknownRunError,
            na.IllegalStateError,
            na.MailboxFullError,
        )
    }
    assert codes == {"unknown_agent", "unknown_run", "illegal_state", "rate_limited"}


def test_library_logging_is_silent_unless_configured() -> None:
    handlers = logging.getLogger("netra_actors").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_type_hints_resolve() -> None:
    for cls in (na.Runtime, na.Subscription, na.AgentContext, na.EmbeddedRuntime):
        for attr, member in vars(cls).items():
            if inspect.isfunction(member) and not attr.startswith("_"):
                typing.get_type_hints(member)


def test_histogram_buckets_are_cumulative_and_quantiles_bounded() -> None:
    from netra_actors._histogram import Histogram

    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.002, 0.002, 0.05, 5.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap.buckets == ((0.001, 1), (0.01, 3), (0.1, 4), (float("inf"), 5))
    assert snap.count == 5
    assert snap.sum == sum((0.0005, 0.002, 0.002, 0.05, 5.0))
    assert snap.quantile(0.5) == 0.01
    assert snap.quantile(1.0) == float("inf")
    assert Histogram().snapshot().quantile(0.5) is None
