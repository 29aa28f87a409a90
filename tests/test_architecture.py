"""The layers of docs/architecture.md, checked: who may import whom, and how big a module may be.

Every ``import rfbatch...`` in src/ is read from the syntax tree (imports inside functions
included: a lazy import is still a dependency) and checked against the table below. A new
module needs no entry as long as it lives in a package listed here; a new top-level package
must be given a place in the layers, here and in the document, before its first import passes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rfbatch"
DOC = SRC.parents[1] / "docs" / "architecture.md"
MAX_MODULE_LINES = 600

# The bottom layer: records, rules and small leaf helpers (settings reads its one file, samples
# makes demo images). They import only each other, so every layer may use them.
BASE = frozenset(
    {
        "rfbatch",  # the package itself (__version__)
        "rfbatch.errors",
        "rfbatch.redact",
        "rfbatch.escapes",  # control characters shown as escapes, for CLI output and log lines
        "rfbatch.ids",
        "rfbatch.media",
        "rfbatch.member_names",
        "rfbatch.settings",
        "rfbatch.samples",
        "rfbatch.allocator",  # glibc malloc tuning, process-wide
    }
)

# The layers that do one kind of I/O each; the layers above them compose them.
_SERVICES: tuple[str, ...] = ("rfbatch.http", "rfbatch.api", "rfbatch.transfer")
_SERVICES += ("rfbatch.localfs", "rfbatch.state", "rfbatch.obs")
_COMPOSED = (*_SERVICES, "rfbatch.webhooks", "rfbatch.app")

# Each layer (a package or a top-level module) and the layers it may import besides BASE and
# itself. Listed bottom-up; a layer never imports one listed after it.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "rfbatch.http": frozenset(),
    "rfbatch.api": frozenset({"rfbatch.http"}),
    # Signed URLs arrive as the API's wire type; nothing else of the API is the data plane's.
    "rfbatch.transfer": frozenset({"rfbatch.http", "rfbatch.api.schemas"}),
    "rfbatch.localfs": frozenset(),
    "rfbatch.state": frozenset(),
    "rfbatch.obs": frozenset(),
    "rfbatch.webhooks": frozenset({"rfbatch.http", "rfbatch.obs"}),
    "rfbatch.app": frozenset(_SERVICES),
    "rfbatch.pipeline": frozenset(_COMPOSED),
    # The emulator stands apart: it must never lean on the client it is there to test.
    "rfbatch.emulator": frozenset(),
    "rfbatch.cli": frozenset({*_COMPOSED, "rfbatch.pipeline", "rfbatch.emulator"}),
    "rfbatch.__main__": frozenset({"rfbatch.cli"}),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        yield _module_name(path), path


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            # "from rfbatch.api import schemas" imports the module rfbatch.api.schemas.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer_of(module: str) -> str | None:
    if module in BASE:
        return "base"
    matches = [layer for layer in MAY_IMPORT if _within(module, layer)]
    return max(matches, key=len) if matches else None


def _real_module(name: str) -> str | None:
    """The rfbatch module (or package) ``name`` refers to, or None for a name inside one."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        rel = Path(*parts[1:]) if len(parts) > 1 else Path()
        if (SRC.parent / "rfbatch" / rel).with_suffix(".py").is_file() or (
            SRC / rel / "__init__.py"
        ).is_file():
            return candidate
        parts.pop()
    return None


def _allowed(importer: str, target: str) -> bool:
    if target in BASE:
        return True
    layer = _layer_of(importer)
    if layer == "base":
        return False
    assert layer is not None
    if _within(target, layer):
        return True
    return any(_within(target, allowed) for allowed in MAY_IMPORT[layer])


def test_every_module_has_a_layer() -> None:
    homeless = [m for m, _ in _modules() if _layer_of(m) is None]
    assert not homeless, (
        f"modules with no place in the layers (add them here and in the doc): {homeless}"
    )


def test_imports_follow_the_layers() -> None:
    wrong: list[str] = []
    for module, path in _modules():
        for line, name in _imports(path, module):
            if not _within(name, "rfbatch"):
                continue
            target = _real_module(name)
            if target is None or target == module:
                continue
            if not _allowed(module, target):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {module} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_cli_commands_do_not_import_each_other() -> None:
    wrong: list[str] = []
    for module, path in _modules():
        if not (module.startswith("rfbatch.cli.") and module.endswith("_cmd")):
            continue
        for line, name in _imports(path, module):
            target = _real_module(name) if _within(name, "rfbatch") else None
            if (
                target
                and target != module
                and target.startswith("rfbatch.cli.")
                and (target.endswith("_cmd"))
            ):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: imports {target}")
    assert not wrong, "command modules importing each other:\n" + "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("module", [m for m, _ in _modules()])
def test_module_is_small(module: str) -> None:
    path = dict(_modules())[module]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines (at most {MAX_MODULE_LINES})"


def test_every_module_is_named_in_the_document() -> None:
    # Named in code spans: `name`, `name.py` or `name.attribute`; the command modules as a
    # group (`*_cmd`); the emulator's in its package docstring, as ``name``.
    named = {
        span.split(".")[0] if not span.endswith(".py") else span.removesuffix(".py")
        for span in re.findall(r"`([^`\s]+)`", DOC.read_text(encoding="utf-8"))
    }
    emulator_doc = ast.get_docstring(ast.parse((SRC / "emulator" / "__init__.py").read_text()))
    assert emulator_doc is not None
    missing: list[str] = []
    for module, path in _modules():
        stem = path.stem
        if stem == "__init__" or (module.startswith("rfbatch.cli.") and stem.endswith("_cmd")):
            continue
        if module.startswith("rfbatch.emulator."):
            if f"``{stem}``" not in emulator_doc:
                missing.append(f"{module} (in the emulator's docstring)")
        elif stem not in named:
            missing.append(module)
    assert not missing, f"modules docs/architecture.md does not name: {missing}"
