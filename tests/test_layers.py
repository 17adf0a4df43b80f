"""The runtime's layers, read from its source: every import of a ``dlscaffold`` module (at top
level, inside functions, under ``TYPE_CHECKING``) points down or sideways in one order, never up;
no module inside the package imports the package face (``dlscaffold/__init__.py``).

The order is the one docs/runtime.md states (Architecture): a module may import modules of its own
layer and of the layers below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dlscaffold

ROOT = Path(dlscaffold.__file__).parent

# Lowest first. A top-level module or a stage folder per entry; ``modules`` is the module library.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "losses", "modules", "losses_doc"),
    ("config",),
    ("records",),
    ("project",),
    ("data",),
    ("parts",),
    ("prepare",),
    ("run",),
    ("train", "evaluate", "api"),
    ("experiments", "jobs"),
    ("tools",),
    ("cli", "__main__"),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    return ".".join(("dlscaffold", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``dlscaffold`` import in a file: ``import dlscaffold.x.y``,
    ``from dlscaffold.x import y`` (``dlscaffold.x.y`` where ``y`` is a module), ``from dlscaffold
    import y``, and relative imports, wherever they stand in the file."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dlscaffold"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "dlscaffold":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    ROOT.parent / Path(*sub.split(".")) / "__init__.py"
                ).is_file()
                found.append((node.lineno, sub if is_module else module))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    missing = {layer_of(module_name(p)) for p in FILES} - set(RANK) - {"__init__"}
    assert not missing, f"modules outside the layer order: {sorted(missing)}; add them to LAYERS and docs/runtime.md"


def test_no_import_points_up_the_layers() -> None:
    problems = []
    for path in FILES:
        here = module_name(path)
        if here == "dlscaffold":
            continue  # the package face: it may import what it offers
        mine = RANK[layer_of(here)]
        for line, module in imports(path):
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if module == "dlscaffold":
                problems.append(f"{where} imports the package face (dlscaffold/__init__.py)")
            elif RANK[layer_of(module)] > mine:
                problems.append(
                    f"{where}: {here} ({layer_of(here)}) imports {module} ({layer_of(module)}), a layer above"
                )
    assert not problems, "\n".join(problems)


def test_the_stage_folders_say_what_they_own() -> None:
    stages = [p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    assert len([p for p in stages if p.name != "modules"]) >= 5
    for folder in stages:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "import" in doc.lower() or folder.name == "modules", f"{folder.name}/__init__.py: no docstring"
    assert len([p for p in ROOT.glob("*.py")]) <= 15


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dlscaffold.parts import flow\n", "dlscaffold.parts.flow"),
        ("def f():\n    from dlscaffold.run.loop import fit\n", "dlscaffold.run.loop"),
        ("import dlscaffold.run.epoch\n", "dlscaffold.run.epoch"),
        ("from dlscaffold import __version__\n", "dlscaffold"),
        ("from ..records import rundir\n", "dlscaffold.records.rundir"),
    ],
)
def test_the_import_reader_sees_every_form(tmp_path: Path, source: str, expected: str) -> None:
    path = ROOT / "run" / "_probe_for_the_reader.py"  # where a relative import resolves from
    found = [m for _, m in _read(source, path)]
    assert found == [expected]


def _read(source: str, path: Path) -> list[tuple[int, str]]:
    original = Path.read_text
    try:
        Path.read_text = lambda self, *a, **k: source if self == path else original(self, *a, **k)  # type: ignore[method-assign]
        return imports(path)
    finally:
        Path.read_text = original  # type: ignore[method-assign]
