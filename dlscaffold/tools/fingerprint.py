"""A run's fingerprint: SHA-256 hashes of what training computes first, for a project's determinism test.

:func:`fingerprint` builds the run as training builds it (no run folder, nothing written), on the
CPU in one thread, and hashes three things in the order training makes them:

- ``data``: the first training batch as the models see it (after the dataset's ``transform_batch``);
- ``init``: each model's weights and buffers before the first step (after ``init_from_data``);
- ``trained``: each model's weights and buffers after ``steps`` optimizer steps.

Each hash covers exact bytes (with each tensor's name, dtype and shape), so any change in the data,
the augmentation, a model's initialisation or the training step shows. :func:`difference` compares
a pinned fingerprint with a new one and names the first thing that changed. A generated project's
``tests/test_determinism.py`` pins its fingerprint in ``tests/determinism.json`` with them.

Exact bytes are exact: torch's CPU kernels (its own, MKL's, oneDNN's) pick their vector
instructions by the machine, and AVX-512 code rounds differently from AVX2 code. So the fingerprint
is computed in a child process whose kernels are held to AVX2 on x86-64 (every x86-64 CPU of the
last decade has it): pins written on a workstation hold on a laptop and on CI. The child computes
in fp32 whatever ``training_params.precision`` says (bf16 and fp16 rounding is the hardware's own,
and AVX2 emulates bf16 slowly), and the parent process is left untouched. Another torch version may
still change the last bits; the fingerprint records it (``environment``) so that a difference can
say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dlscaffold.errors import UserError
from dlscaffold.parts.seeding import forked_rng
from dlscaffold.run.loop import Session, train_steps
from dlscaffold.train import built_session

__all__ = ["difference", "fingerprint"]

# The child's kernels: AVX2 everywhere on x86-64 (read once, when torch is imported)
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
_CHILD = "DLSCAFFOLD_FINGERPRINT_CHILD"

_INIT = "the initialisation of {}"
_TRAINED = "the training step (weights of {} after {})"


def fingerprint(
    config_path: str | Path,
    steps: int = 3,
    overrides: Sequence[str] = (),
    project_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Hash the first training batch, each model's initial weights and its weights after ``steps``
    optimizer steps of the run ``config_path`` describes (with ``overrides``), built on the CPU with
    the config's ``training_params.seed``.

    Returns ``{"steps", "data", "init": {model: hash}, "trained": {model: hash}, "environment"}``
    (JSON-ready). Computed in a child process with portable kernels, in fp32 (see the module's
    text); nothing is written and this process is not changed.

    Raises:
        UserError: a problem ``dlscaffold train`` would report for the config (one line each).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    project = Path(project_dir) if project_dir is not None else None
    if os.environ.get(_CHILD) != "1":
        project_text = None if project is None else str(project)
        return _in_child(
            {"config": str(config_path), "steps": steps, "overrides": list(overrides), "project": project_text}
        )
    return _fingerprint_here(Path(config_path), steps, [*overrides, "training_params.precision=fp32"], project)


def _in_child(args: dict[str, Any]) -> dict[str, Any]:
    """:func:`fingerprint` in a fresh Python process with :data:`PORTABLE_KERNELS` (x86-64)."""
    env = {**os.environ, _CHILD: "1"}
    if platform.machine().lower() in ("x86_64", "amd64"):
        env.update(PORTABLE_KERNELS)
    command = [sys.executable, "-m", "dlscaffold.tools.fingerprint", json.dumps(args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error: ")]
        raise UserError(*(errors or [f"the fingerprint's process failed: {done.stderr.strip()[-2000:]}"]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fingerprint_here(config: Path, steps: int, overrides: list[str], project: Path | None) -> dict[str, Any]:
    """The fingerprint, computed in this process (the child's part)."""
    with _one_cpu_thread(), forked_rng():
        with built_session(config, overrides, project_dir=project, device="cpu") as session:
            first = _first_batch(session)
            init = _model_hashes(session)
            train_steps(session, steps)
            trained = _model_hashes(session)
    return {
        "steps": steps,
        "data": first["hash"],
        "init": init,
        "trained": trained,
        "environment": {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()},
    }


def difference(pinned: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What changed first between two fingerprints, as a sentence; None when they agree.

    Checked in the order training makes things: the data, then each model's initialisation, then
    each model's weights after the steps. A difference in the data changes everything after it, so
    only the first difference is named. The ``environment`` is not compared: a difference notes it
    when the torch version or the CPU's instruction set differs from the pinned one.
    """
    found = _first_change(pinned, current)
    if found is None:
        return None
    then, now = pinned.get("environment") or {}, current.get("environment") or {}
    moved = [f"{key} {then.get(key)} -> {now.get(key)}" for key in ("torch", "cpu") if then.get(key) != now.get(key)]
    if moved:
        found += f" (note: since the pins were written, {', '.join(moved)}: that alone can change the last bits)"
    return found


def _first_change(pinned: dict[str, Any], current: dict[str, Any]) -> str | None:
    if pinned.get("steps") != current.get("steps"):
        return f"the pins are of {_steps(pinned.get('steps'))}, this check takes {current.get('steps')}"
    if pinned.get("data") != current.get("data"):
        return (
            "the data (first training batch) changed: the dataset, its split or its transform_batch; "
            "everything after it (initialisation, training steps) may change with it"
        )
    for key, what in (("init", _INIT), ("trained", _TRAINED)):
        was, now = pinned.get(key) or {}, current.get(key) or {}
        if list(was) != list(now):
            return f"the models changed: pinned {', '.join(was) or 'none'}, now {', '.join(now) or 'none'}"
        for name in now:
            if was[name] != now[name]:
                return what.format(name, _steps(current["steps"])) + " changed"
    return None


def _steps(n: Any) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _first_batch(session: Session) -> dict[str, str]:
    """Wrap the trainer's ``train_step`` on this instance so that the first batch it receives (on the
    device, transformed as the models see it) is hashed; returns the dict the hash lands in."""
    trainer, seen = session.trainer, {}
    step = trainer.train_step

    def hashing_step(batch: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if not seen:
            seen["hash"] = _hash_items(sorted(batch.items()))
        return step(batch, *args, **kwargs)

    trainer.train_step = hashing_step
    return seen


def _model_hashes(session: Session) -> dict[str, str]:
    """Each model's state (weights and buffers), hashed, in ``info_flow`` order."""
    return {name: _hash_items(model.state_dict().items()) for name, model in session.run.flow.models.items()}


def _hash_items(items: Any) -> str:
    """SHA-256 over named values: a tensor as its dtype, shape and exact bytes (contiguous, on the
    CPU); any other value (a list of strings, say) as its JSON text."""
    digest = hashlib.sha256()
    for name, value in items:
        digest.update(f"{name}\0".encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bfloat16 too
        else:
            digest.update(json.dumps(value, sort_keys=True, default=repr).encode())
        digest.update(b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """One intra-op thread while the fingerprint is taken (a reduction's order can follow the thread
    count), the process's own count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _main(argv: list[str]) -> int:
    """The child process: the fingerprint of ``argv[0]``'s arguments as one JSON line on stdout."""
    args = json.loads(argv[0])
    try:
        found = fingerprint(args["config"], args["steps"], args["overrides"], args["project"])
    except UserError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
