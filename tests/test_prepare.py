"""The pre-run phase: one problem of each kind gives one line each, before any model is built."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import run_cli, run_dirs, write_config

import dlscaffold

# Appended to the toy project's models.py: every model constructor call leaves a line in a file.
RECORD_CONSTRUCTORS = """
import functools as _functools
import pathlib as _pathlib

_CALLS = _pathlib.Path(__file__).with_name("constructed.txt")


def _recording(init):
    @_functools.wraps(init)  # keeps the signature the pre-run checks read
    def recording_init(self, *args, **kwargs):
        with open(_CALLS, "a") as fh:
            fh.write(type(self).__name__ + "\\n")
        init(self, *args, **kwargs)
    return recording_init


for _cls in (Encoder, Classifier, Decoder):
    _cls.__init__ = _recording(_cls.__init__)
"""


def test_one_problem_of_each_kind_one_line_each_before_any_model_is_built(toy: Path, tmp_path: Path) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(RECORD_CONSTRUCTORS)
    config = write_config(
        toy,
        "bad.yml",
        training_params__lrn_rat=0.01,  # schema: an unknown key
        training_params__optimizer={"name": "SGD", "kwargs": {"momentun": 0.9}},  # optimizer kwargs
        dataloading_params__val_ratio=0,  # an empty validation split
        info_flow__Encoder__init_args={"in_dim": 8, "enc_dimm": 4},  # constructor signature
        info_flow__Encoder__inputs={"featurez": "dataset"},  # forward signature
        info_flow__Classifier__inputs={"encoding": "Encodr"},  # tensor source
        info_flow__Classifier__evals={
            "MultinomialAccuracy": {"logging_name": "acc", "inputs": {"class_logits": "Classifier"}},  # arity
            "Top2Accuracy": {"logging_name": "acc", "inputs": {"class_logits": "Classifier", "class_idx": "dataset"}},
        },  # ... and both logged as Classifier/acc
        info_flow__Decoder__losses={"MSEE": {"inputs": {"reconstruction": "Decoder", "features": "dataset"}}},  # name
        info_flow__Decoder__model_dir=str(tmp_path / "no_run_here"),  # model_dir
    )
    result = run_cli("train", str(config), cwd=toy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    expected = [
        "training_params.lrn_rat: unknown key",
        "training_params.optimizer.kwargs: unexpected 'momentun'",
        "dataloading_params.val_ratio: found 0",
        "info_flow.Encoder.init_args: unexpected 'enc_dimm'",
        "info_flow.Encoder.inputs: unexpected 'featurez'",
        "info_flow.Classifier.inputs.encoding: unknown source 'Encodr'",
        "info_flow.Classifier.evals.MultinomialAccuracy.inputs: found 1 input(s); expected 2",
        "info_flow: evals logged twice as Classifier/acc",
        "info_flow.Decoder.losses.MSEE: unknown loss 'MSEE'",
        "info_flow.Decoder.model_dir: found",
    ]
    for start in expected:
        assert sum(line.startswith(f"error: {start}") for line in errors) == 1, (start, result.stderr)
    assert len(errors) == len(expected), result.stderr
    assert not (toy / "runs").exists()
    assert not (toy / "constructed.txt").exists()  # no model constructor ran

    good = run_cli("train", "config.yml", "training_params.max_training_epochs=1", "--no-save", cwd=toy)
    assert good.returncode == 0, good.stderr
    assert set((toy / "constructed.txt").read_text().split()) == {"Encoder", "Classifier", "Decoder"}


def test_a_shape_mismatch_names_the_term_and_both_shapes(toy: Path) -> None:
    # Decoder's (B, 8) reconstruction against a (B,) target: MSE would broadcast to (B, B) silently.
    config = write_config(
        toy,
        "bad.yml",
        info_flow__Decoder__losses={"MSE": {"inputs": {"reconstruction": "Decoder", "class_idx": "dataset"}}},
    )
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: info_flow.Decoder.losses.MSE: expected prediction and target of the same shape")
    assert "(2, 8)" in line and "(2,)" in line
    assert not (toy / "runs").exists()


def test_a_conflict_block_left_by_an_update_is_refused_with_its_line(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    conflict = ["<<<<<<< before updating", "  batch_size: 16", "=======", "  batch_size: 32", ">>>>>>> after updating"]
    lines = (toy / "config.yml").read_text().splitlines()
    (toy / "config.yml").write_text("\n".join([*lines[:5], *conflict, *lines[5:]]) + "\n")
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "config.yml:6: holds a merge conflict block" in line

    with open(toy / "models.py", "a") as fh:
        fh.write("\n".join(["", *conflict]) + "\n")
    result = run_cli("evaluate", str(run), "--project", str(toy), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"models.py:{len((toy / 'models.py').read_text().splitlines()) - 4}: holds a merge conflict block" in line


def _imports(path: Path) -> set[str]:
    """The dlscaffold modules a file imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dlscaffold"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dlscaffold"))
    return found


def test_no_import_circle_and_no_long_function_in_the_runtime() -> None:
    root = Path(dlscaffold.__file__).parent
    modules = {
        ".".join(("dlscaffold", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # package __init__ files re-export their submodules: only circles between modules count
    graph = {n: {m for m in deps if not (n.startswith(m + ".") or m.startswith(n + "."))} for n, deps in graph.items()}

    def visit(name: str, trail: list[str]) -> None:
        assert name not in trail, f"import circle: {' -> '.join(trail[trail.index(name) :] + [name])}"
        for dep in graph[name]:
            visit(dep, [*trail, name])

    for name in graph:
        visit(name, [])
    long = []
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > 60:  # the whole function: signature, docstring and body
                    long.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {node.name} "
                        f"({node.end_lineno - start + 1} lines)"
                    )
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_the_pre_run_phase_imports_nothing_that_builds() -> None:
    """prepare.py checks; building data, models, flows, trainers and loops is elsewhere (lazy imports count)."""
    imported = _imports(Path(dlscaffold.__file__).parent / "prepare.py")
    forbidden = {f"dlscaffold.{name}" for name in ("run.builder", "build.flow", "run.epoch", "run.trainer", "run.loop")}
    assert imported and not imported & forbidden, sorted(imported & forbidden)
