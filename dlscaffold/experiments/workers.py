"""Worker processes of a sweep or a seed group: one GPU each when there are GPUs, an equal share
of the CPU threads otherwise; a signal to the parent reaches each worker once.

Workers run in their own session, so a Ctrl-C at the terminal reaches the parent only, which
passes it on (a worker that received it twice would exit without saving). On Linux a worker also
ends when its parent does, however that ends (``kill -9`` of the parent's process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable

Echo = Callable[[str], None]


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def gpu_count() -> int:
    with contextlib.suppress(Exception):
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return 0


def worker_env(index: int, workers: int, gpus: int) -> dict[str, str]:
    """The environment of worker ``index`` of ``workers``: its GPU, or its share of the CPU threads."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    else:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def start(args: list[str], env: dict[str, str], **popen: object) -> subprocess.Popen:
    """``python -m dlscaffold ARGS`` as a worker process."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        **popen,
    )


class Forwarding:
    """While installed, SIGINT and SIGTERM to this process are passed on, once, to the workers in
    ``procs`` (a list that may grow); ``signum`` is the signal that came, or None."""

    def __init__(self, procs: list[subprocess.Popen], echo: Echo):
        self.procs, self.echo, self.signum = procs, echo, None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        self.echo(f"{signal.Signals(signum).name}: stopping the workers; each saves its run's exact position")
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def __enter__(self) -> Forwarding:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
