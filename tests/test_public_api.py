"""The public surface: every public name is exported, documented and typed; the library stays
quiet by default.

A public module is one whose dotted path has no part starting with ``_``; its public names are
its ``__all__``. ``docs/api.md`` has one section per public module (``## `netra_actors.X```) and
one entry per public name (``- `Name` — what it is``): the two must be equal, so a name added,
moved or removed fails here until the reference says so. The guides (README.md and docs/*.md)
may only name public things: every ``na.X``/``netra_actors.X.Y`` and ``from netra_actors.X
import Y`` in them must resolve, and a module-level name must be in its module's ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import types
import typing
from pathlib import Path

import pytest

import netra_actors as na
from netra_actors import _exceptions

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "api.md"
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Placeholders the guides use to state a rule (``na.NAME(...)``, ``netra_actors.X.Y``).
PLACEHOLDERS = {"NAME", "X", "Y"}


def public_modules() -> dict[str, types.ModuleType]:
    """Every public module of the package, by dotted name."""
    found = {"netra_actors": na}
    for info in pkgutil.walk_packages(na.__path__, "netra_actors."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found[info.name] = importlib.import_module(info.name)
    return found


MODULES = public_modules()


def public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{module.__name__} is public but has no __all__"
    return names


def reference() -> dict[str, dict[str, str]]:
    """docs/api.md: for each section's module, its entries' names and descriptions."""
    sections: dict[str, dict[str, str]] = {}
    entries: dict[str, str] | None = None
    for number, line in enumerate(REFERENCE.read_text().splitlines(), 1):
        heading = re.fullmatch(r"## `([\w.]+)`", line)
        if heading:
            assert heading[1] not in sections, f"api.md:{number}: {heading[1]} twice"
            entries = sections[heading[1]] = {}
            continue
        entry = re.match(r"- `(\w+)` — (.*)", line)
        if entry and entries is not None:
            assert entry[1] not in entries, f"api.md:{number}: {entry[1]} twice in its section"
            entries[entry[1]] = entry[2]
    return sections


# ------------------------------------------------------------------------------- the tests


def test_every_public_module_has_an_all_of_names_that_resolve() -> None:
    assert {"netra_actors.exceptions", "netra_actors.testing"} <= MODULES.keys()
    for name, module in MODULES.items():
        names = public_names(module)
        assert len(set(names)) == len(names), f"{name}.__all__ repeats a name"
        for attr in names:
            obj = getattr(module, attr)  # AttributeError: a name in __all__ that is not there
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{name}.{attr} has no docstring"


def test_the_top_level_holds_what_an_application_needs() -> None:
    """About twenty names; the rest belongs in a sub-namespace (docs/api.md says which)."""
    assert len(na.__all__) <= 24, sorted(na.__all__)
    for sub in ("exceptions", "policies", "statistics", "types"):
        assert getattr(na, sub) is MODULES[f"netra_actors.{sub}"]


def test_the_reference_names_every_public_name_and_nothing_else() -> None:
    sections = reference()
    assert sorted(sections) == sorted(MODULES), "docs/api.md's sections are not the modules"
    for name, module in MODULES.items():
        entries = sections[name]
        missing = sorted(set(public_names(module)) - entries.keys())
        stale = sorted(entries.keys() - set(public_names(module)))
        assert not missing, f"docs/api.md has no entry for {name}.{missing}"
        assert not stale, f"docs/api.md names {stale} in {name}, which does not export them"
        for attr, text in entries.items():
            assert len(text.split()) >= 4, f"docs/api.md: `{attr}` needs a description"


def test_the_references_links_lead_to_headings() -> None:
    def anchor(heading: str) -> str:  # GitHub's: lower case, no punctuation, spaces to dashes
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    for target, fragment in re.findall(r"\]\((\w+\.md)#([\w-]+)\)", REFERENCE.read_text()):
        text = (REFERENCE.parent / target).read_text()
        headings = {anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}
        assert fragment in headings, f"docs/api.md links to {target}#{fragment}: no such heading"


def resolve(dotted: str) -> tuple[object, object]:
    """The object ``dotted`` names and its parent (a module or a class); KeyError if none."""
    parts = dotted.split(".")
    parent: object = None
    obj: object = na
    for n, part in enumerate(parts[1:], 2):
        parent = obj
        prefix = ".".join(parts[:n])
        if prefix in MODULES:
            obj = MODULES[prefix]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise KeyError(dotted)
    return obj, parent


def test_the_guides_name_only_public_things() -> None:
    named = re.compile(r"(?<![\w./])(?:na|netra_actors)((?:\.\w+)+)")
    imports = re.compile(r"^\s*from (netra_actors(?:\.\w+)*) import \(?([\w, ]+)", re.M)
    problems = []
    for guide in GUIDES:
        text = guide.read_text()
        references = [f"netra_actors{m[1]}" for m in named.finditer(text)]
        references += [
            f"{m[1]}.{n.strip()}" for m in imports.finditer(text) for n in m[2].split(",")
        ]
        for dotted in references:
            parts = dotted.split(".")
            if any(p.startswith("_") for p in parts) or PLACEHOLDERS & set(parts):
                continue  # a private module the architecture describes, a dunder, a placeholder
            try:
                _, parent = resolve(dotted)
            except KeyError:
                problems.append(f"{guide.name}: {dotted} does not exist")
                continue
            module = parent if isinstance(parent, types.ModuleType) else None
            if module and dotted not in MODULES and parts[-1] not in public_names(module):
                problems.append(f"{guide.name}: {dotted} is not in its module's __all__")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_public_functions_and_methods_are_fully_annotated(module: str) -> None:
    def check(fn: object, where: str) -> None:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        for p in sig.parameters.values():
            if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            assert p.annotation is not inspect.Parameter.empty, f"{where}({p.name}) untyped"
        assert sig.return_annotation is not inspect.Signature.empty, f"{where} has no return type"

    for name in public_names(MODULES[module]):
        obj = getattr(MODULES[module], name)
        if inspect.isfunction(obj):
            check(obj, f"{module}.{name}")
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                check(member, f"{module}.{name}.{attr}")


def test_the_package_is_marked_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("netra_actors").joinpath("py.typed").is_file()


def test_exceptions_holds_the_whole_tree_and_the_top_level_the_same_classes() -> None:
    raised = {
        name
        for name, obj in vars(_exceptions).items()
        if inspect.isclass(obj) and issubclass(obj, na.NetraError)
    }
    assert set(na.exceptions.__all__) == raised
    for name in na.exceptions.__all__:
        assert issubclass(getattr(na.exceptions, name), na.NetraError), name
        assert re.search(rf"\b{name}\b", na.exceptions.__doc__ or ""), f"the tree lacks {name}"
    for name in na.__all__:
        obj = getattr(na, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert obj is getattr(na.exceptions, name), name


def test_commands_carry_wire_codes() -> None:
    codes = {
        cls.code
        for cls in (
            na.exceptions.UnknownAgentError,
            na.exceptions.UnknownRunError,
            na.exceptions.IllegalStateError,
            na.exceptions.MailboxFullError,
        )
    }
    assert codes == {"unknown_agent", "unknown_run", "illegal_state", "rate_limited"}


def test_library_logging_is_silent_unless_configured() -> None:
    handlers = logging.getLogger("netra_actors").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_type_hints_resolve() -> None:
    for cls in (na.Runtime, na.types.Subscription, na.AgentContext, na.EmbeddedRuntime):
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
