"""``dlscaffold profile CONFIG``: which model, loss or optimizer step costs a training step's time.

:func:`profile_config` builds the run as ``dlscaffold train`` builds it, with no run folder
(:func:`dlscaffold.train.built_session`), and trains ``warmup + steps`` steps in one run of the
loop's own training pass (:func:`dlscaffold.run.loop.train_steps`): one epoch's loader iterator
(and its workers) goes on from the warm-up into the profiled steps, and ``torch.profiler`` records
from the end of the ``warmup``-th step to the end of the last. :class:`Spans` marks what each part
of a step does with ``record_function`` ranges, all attached from outside the runtime and all
removed afterwards:

``dlscaffold/step``
    one per optimizer step, from the end of the previous step's ``train_step`` to the end of its
    own: the step with its data loading, batch transform and the loop's bookkeeping.
``dlscaffold/<Model>/forward``
    a model's ``forward`` (module forward pre- and post-hooks).
``dlscaffold/<Model>/backward``
    backward through a model: opened when the gradient of one of its outputs is complete (a
    gradient hook on the output tensors), closed when its inputs' gradients are complete, when all
    its trained parameters have their gradients, when another model's backward opens, or when the
    backward pass ends, whichever comes first.
``dlscaffold/loss/<Model>/<name>/forward``, ``dlscaffold/eval/<Model>/<name>``
    computing one loss or eval term (the term's ``compute``; ``<Model>/<name>`` is the name the
    term logs under).
``dlscaffold/loss/<Model>/<name>/backward``
    backward through a loss term: opened when the gradient of its values is complete, closed as a
    model's backward range is.
``dlscaffold/metrics/update``
    updating the ``torchmetrics.<Class>`` evals' states.
``dlscaffold/<Model>/optimizer_step``
    the model's ``optimizer.step()`` (its step pre- and post-hooks).

The table's times are those ranges' totals as the profiler recorded them; the step's rest (data
loading, the objective's sum, clipping, zeroing gradients, EMA updates) is the ``step`` ranges'
total less the named parts. The trace (Chrome / Perfetto JSON) is the only file written.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.errors import UserError

if TYPE_CHECKING:
    import torch

    from dlscaffold.run.loop import Session

PREFIX = "dlscaffold"
STEP = f"{PREFIX}/step"
OTHER = "data loading and other"
DEFAULT_TRACE = "profile_trace.json"
VIEWERS = "https://ui.perfetto.dev or chrome://tracing"


def profile_config(
    config: Path,
    overrides: list[str],
    steps: int,
    warmup: int,
    trace: Path | None,
    project_dir: Path | None,
    device: str | None,
    echo: Callable[[str], Any] = print,
) -> None:
    """Profile ``steps`` training steps of a config (after ``warmup`` untimed ones) and print each
    model's forward, backward and optimizer step, each loss and eval, and the rest of the step:
    total milliseconds, milliseconds per step and share of the step time; write the profiler's
    trace to ``trace`` (default ``profile_trace.json`` in the current folder). Nothing else is
    written: no run folder, no checkpoint, no change to any run.

    Raises:
        UserError: under torchrun, a trace path that cannot be written, or any problem
            ``dlscaffold train`` would report for the config.
    """
    from dlscaffold.parts.distributed import world_from_env

    if world_from_env().distributed:
        raise UserError("dlscaffold profile profiles a single process: run it without torchrun")
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be 1 or more and --warmup 0 or more (got {steps} and {warmup})")
    trace = _trace_path(trace)
    from dlscaffold.train import built_session

    with built_session(config, list(overrides), project_dir=project_dir, device=device) as session:
        device_type = session.run.placement.device.type
        echo(_heading(session, steps, warmup))
        labels, totals = _profiled(session, steps, warmup, trace)
    for line in table_lines(labels, totals, steps, device=device_type == "cuda"):
        echo(line)
    echo(f"Trace: {trace} (open it in {VIEWERS})")


def _trace_path(trace: Path | None) -> Path:
    """Where the trace goes; refused at once (before anything is built) when it cannot be written."""
    path = Path(trace) if trace is not None else Path(DEFAULT_TRACE)
    if path.is_dir():
        raise UserError(f"--trace: {path} is a folder; name a file, e.g. {path / DEFAULT_TRACE}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--trace: the folder {parent} does not exist; create it or name a file in an existing folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--trace: {path} cannot be written here (permissions); name another file")
    return path


def _heading(session: Session, steps: int, warmup: int) -> str:
    run = session.run
    models = ", ".join(run.flow.models)
    return (
        f"Profiling {steps} training step(s) after {warmup} warm-up step(s): {models} on {run.placement.device}, "
        f"batch {run.loaders['train'].batch_size}"
    )


def _profiled(
    session: Session, steps: int, warmup: int, trace: Path
) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """Train ``warmup + steps`` steps in one training pass with the spans attached, the profiler
    recording the last ``steps`` (:class:`Spans` starts and stops it); write the trace. Returns the
    spans' table labels and their totals ``(cpu_us, device_us)`` by span name."""
    from torch.profiler import ProfilerActivity, profile

    from dlscaffold.run.loop import train_steps

    activities = [ProfilerActivity.CPU]
    if session.run.placement.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    spans = Spans(session)
    with _quiet_kineto():
        prof = profile(activities=activities)
        with spans.attached(steps, warmup=warmup, profiler=prof):
            train_steps(session, warmup + steps)
    try:
        prof.export_chrome_trace(str(trace))
    except OSError as exc:
        raise UserError(f"--trace: could not write {trace}: {exc.strerror or exc}") from None
    return spans.labels, span_totals(prof.events())


@contextlib.contextmanager
def _quiet_kineto() -> Iterator[None]:
    """Keep the profiler's C++ backend from logging warnings that concern no user (on a machine
    without a GPU: ``gpuGetDeviceCount failed``), unless ``KINETO_LOG_LEVEL`` says otherwise."""
    if "KINETO_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["KINETO_LOG_LEVEL"] = "5"
    try:
        yield
    finally:
        os.environ.pop("KINETO_LOG_LEVEL", None)


def span_totals(events: Any) -> dict[str, tuple[float, float]]:
    """``{span name: (CPU microseconds, device microseconds)}`` summed over the profiler's CPU-side
    events of the ``dlscaffold/`` ranges (a range's device time: the kernels launched inside it)."""
    from torch.autograd import DeviceType

    totals: dict[str, tuple[float, float]] = {}
    for event in events:
        if event.device_type != DeviceType.CPU or not event.name.startswith(f"{PREFIX}/"):
            continue
        cpu, dev = totals.get(event.name, (0.0, 0.0))
        totals[event.name] = (cpu + event.time_range.elapsed_us(), dev + getattr(event, "device_time_total", 0.0))
    return totals


def table_lines(
    labels: dict[str, str], totals: dict[str, tuple[float, float]], steps: int, device: bool = False
) -> list[str]:
    """The table as aligned lines: one row per span that ran (in ``labels``' order), the step's
    rest and the whole step; total ms over the steps, ms per step, share of the step time
    (``device``: also the kernels' ms per step)."""
    step_us = totals.get(STEP, (0.0, 0.0))[0]
    named = [(labels[name], totals[name]) for name in labels if name in totals and name != STEP]
    rest = max(step_us - sum(cpu for _, (cpu, _) in named), 0.0)
    rows = [*named, (OTHER, (rest, 0.0)), ("step (all of it)", totals.get(STEP, (0.0, 0.0)))]
    header = ["part", "total ms", "ms/step", "share"] + (["device ms/step"] if device else [])
    body = []
    for label, (cpu, dev) in rows:
        share = f"{100 * cpu / step_us:.1f}%" if step_us else "-"
        row = [label, f"{cpu / 1e3:.2f}", f"{cpu / 1e3 / steps:.3f}", share]
        body.append(row + ([f"{dev / 1e3 / steps:.3f}"] if device else []))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), *(line(r) for r in body)]


class Spans:
    """The ``record_function`` ranges of a profiled step, attached to a built session from outside
    (hooks, and wrappers set on instances), and every one removed again by :meth:`attached`.

    ``labels`` maps each span name to its row in the table, in the table's order: per model
    (``info_flow`` order) its forward, backward and optimizer step, then each loss's forward and
    backward, the evals and the torchmetrics updates.

    Backward ranges come from gradient hooks, which run inside the autograd engine: at most one is
    open at a time (the engine works through one model or loss, then the next), so the ranges
    never overlap and their times add up.

    The ``dlscaffold/step`` ranges start after ``warmup`` optimizer steps; a ``profiler`` (a
    ``torch.profiler.profile`` not yet started) is started there, between two steps, where no range
    is open, and stopped after the last profiled step: every range it records opens and closes
    while it records.
    """

    def __init__(self, session: Session):
        self.session = session
        self.labels: dict[str, str] = {}
        self.undo: list[Callable[[], None]] = []  # hook handles' remove() and instance attributes to drop
        self.forward_open: dict[str, list[Any]] = {}  # model -> its entered forward ranges
        self.backward: tuple[str, Any] | None = None  # the open backward range: (span name, range)
        self.pending: set[int] = set()  # the trained parameters of its model still without their gradient
        self.params: dict[str, list[torch.nn.Parameter]] = {}  # a model's backward span -> its trained parameters
        self.end_queued = False  # a callback closes the open range when the backward pass ends
        self.step_range: Any = None
        self.profiler: Any = None  # the torch.profiler.profile that Spans starts and stops, if any
        self.recording = False

    @contextlib.contextmanager
    def attached(self, steps: int, warmup: int = 0, profiler: Any = None) -> Iterator[None]:
        """The spans attached for ``steps`` optimizer steps after ``warmup`` ones, ``profiler``
        recording those ``steps``; every range closed, the profiler stopped and every hook removed
        on leaving, however the steps end."""
        self.profiler = profiler
        try:
            self._attach_models()
            self._attach_terms()
            self._attach_optimizers()
            self._attach_ema()
            self._attach_steps(steps, warmup)
            yield
        finally:
            self._close_backward()
            for ranges in self.forward_open.values():
                while ranges:
                    _exit(ranges.pop())
            if self.step_range is not None:
                _exit(self.step_range)
                self.step_range = None
            try:
                self._record(False)
            finally:
                for undo in reversed(self.undo):
                    undo()
                self.undo.clear()

    def _attach_models(self) -> None:
        """Forward ranges from module hooks on what a training step calls (the model, or its DDP /
        torch.compile wrapper); the trained parameters' gradient hooks that can close a backward range."""
        flow = self.session.run.flow
        for name, model in flow.models.items():
            called, backward = flow.wrapped.get(name, model), f"{PREFIX}/{name}/backward"
            self.labels[f"{PREFIX}/{name}/forward"] = f"{name}.forward"
            self.labels[backward] = f"{name}.backward"
            if name in self.session.trainer.optimizers:  # its row next to the model's (set by _attach_optimizers)
                self.labels[f"{PREFIX}/{name}/optimizer_step"] = f"{name}.optimizer_step"
            if name in self._averages():  # an ema_of model: its update after its source's step (_attach_ema)
                self.labels[f"{PREFIX}/{name}/ema_update"] = f"{name}.ema_update"
            self.forward_open[name] = []
            pre = called.register_forward_pre_hook(functools.partial(self._forward_began, name), with_kwargs=True)
            post = called.register_forward_hook(functools.partial(self._forward_ended, name), always_call=True)
            self.undo += [pre.remove, post.remove]
            self.params[backward] = [p for p in model.parameters() if p.requires_grad]
            for p in self.params[backward]:
                hook = functools.partial(self._accumulated, backward)
                self.undo.append(p.register_post_accumulate_grad_hook(hook).remove)

    def _attach_terms(self) -> None:
        """Each loss's ``compute`` (and the backward from its values), each eval's, the metrics' updates."""
        flow = self.session.run.flow
        for term in flow.losses:
            span = f"{PREFIX}/loss/{term.name}"
            self.labels[f"{span}/forward"] = f"loss {term.name} forward"
            self.labels[f"{span}/backward"] = f"loss {term.name} backward"
            self._wrap(term, "compute", f"{span}/forward", backward=f"{span}/backward")
        for term in flow.evals:
            self.labels[f"{PREFIX}/eval/{term.name}"] = f"eval {term.name}"
            self._wrap(term, "compute", f"{PREFIX}/eval/{term.name}")
        if flow.metrics:
            self.labels[f"{PREFIX}/metrics/update"] = "torchmetrics updates"
            self._wrap(flow, "update_metrics", f"{PREFIX}/metrics/update")

    def _averages(self) -> dict[str, Any]:
        """The run's ``ema_of`` models' averages (:mod:`dlscaffold.parts.ema`), by model name."""
        hook = self.session.trainer.on_stepped
        return {average.name: average for average in getattr(hook, "averages", ())}

    def _attach_ema(self) -> None:
        """A range around each ``ema_of`` model's update (after its source's optimizer step)."""
        for name, average in self._averages().items():
            self._wrap(average, "update", f"{PREFIX}/{name}/ema_update")

    def _attach_optimizers(self) -> None:
        """A range from each optimizer's step pre-hook to its step post-hook."""
        for name, optimizer in self.session.trainer.optimizers.items():
            span = f"{PREFIX}/{name}/optimizer_step"
            self.labels[span] = f"{name}.optimizer_step"
            opened: list[Any] = []

            def before(opt: Any, args: Any, kwargs: Any, span: str = span, opened: list = opened) -> None:
                opened.append(_enter(span))

            def after(opt: Any, args: Any, kwargs: Any, opened: list = opened) -> None:
                if opened:
                    _exit(opened.pop())

            self.undo += [
                optimizer.register_step_pre_hook(before).remove,
                optimizer.register_step_post_hook(after).remove,
            ]

    def _attach_steps(self, steps: int, warmup: int) -> None:
        """``dlscaffold/step`` ranges, one per optimizer step after the first ``warmup``:
        ``trainer.train_step`` wrapped on the instance counts the steps as the trainer's step count
        moves on; at the end of the ``warmup``-th it starts the profiler and opens the first range,
        at the end of each later one it closes the current range and opens the next, or, after the
        last, stops the profiler."""
        trainer = self.session.trainer
        original, done = trainer.train_step, [0]

        def train_step(*args: Any, **kwargs: Any) -> Any:
            before = trainer.step
            try:
                return original(*args, **kwargs)
            finally:
                if trainer.step != before:
                    done[0] += 1
                    self._step_ended(done[0] - warmup, steps)

        trainer.train_step = train_step
        self.undo.append(lambda: vars(trainer).pop("train_step", None))
        self._step_ended(-warmup, steps)

    def _step_ended(self, profiled: int, steps: int) -> None:
        """Between two optimizer steps, ``profiled`` of the ``steps`` profiled ones done (negative:
        warm-up steps still to come): close the current step range; start the next one, the
        profiler first when it is the first; or stop the profiler after the last."""
        if self.step_range is not None:
            _exit(self.step_range)
            self.step_range = None
        if 0 <= profiled < steps:
            self._record(True)
            self.step_range = _enter(STEP)
        elif profiled == steps:
            self._record(False)

    def _record(self, on: bool) -> None:
        """Start or stop the profiler (if Spans has one), waiting for the GPU's work before it stops."""
        if self.profiler is None or self.recording == on:
            return
        if on:
            self.profiler.start()
            self.recording = True
            return
        self.recording = False  # not stopped twice, even if stopping fails
        if self.session.run.placement.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        self.profiler.stop()

    def _wrap(self, owner: Any, method: str, span: str, backward: str | None = None) -> None:
        """Set ``owner.<method>`` on the instance to the method run inside the range ``span``;
        ``backward``: the range that the gradient of the tensor it returns opens."""
        from torch.profiler import record_function

        original = getattr(owner, method)

        def inside(*args: Any, **kwargs: Any) -> Any:
            with record_function(span):
                value = original(*args, **kwargs)
            if backward is not None:
                self._hook_outputs(value, backward)
            return value

        setattr(owner, method, inside)
        self.undo.append(lambda: vars(owner).pop(method, None))

    # --- forward: module hooks

    def _forward_began(self, name: str, module: Any, args: tuple, kwargs: dict) -> None:
        self.forward_open[name].append(_enter(f"{PREFIX}/{name}/forward"))
        for tensor in _tensors((args, kwargs)):  # their gradients complete: backward through the model is done
            if tensor.requires_grad and tensor.grad_fn is not None:  # not a leaf: the hook goes with the graph
                tensor.register_hook(functools.partial(self._inputs_reached, f"{PREFIX}/{name}/backward"))

    def _forward_ended(self, name: str, module: Any, args: tuple, output: Any) -> None:
        if self.forward_open[name]:
            _exit(self.forward_open[name].pop())
        self._hook_outputs(output, f"{PREFIX}/{name}/backward")

    def _hook_outputs(self, value: Any, span: str) -> None:
        """Gradient hooks on the tensors a model or loss returned: backward has reached it."""
        for tensor in _tensors(value):
            if tensor.requires_grad and tensor.grad_fn is not None:
                tensor.register_hook(functools.partial(self._outputs_reached, span))

    # --- backward: gradient hooks (run by the autograd engine)

    def _outputs_reached(self, span: str, grad: Any) -> None:
        if self.backward is not None and self.backward[0] == span:
            return
        self._close_backward()  # one backward range at a time: the engine has moved on to this one
        self.backward = (span, _enter(span))
        self.pending = {id(p) for p in self.params.get(span, ()) if p.requires_grad}
        if not self.end_queued:
            from torch.autograd import Variable

            Variable._execution_engine.queue_callback(self._backward_ended)
            self.end_queued = True

    def _inputs_reached(self, span: str, grad: Any) -> None:
        if self.backward is not None and self.backward[0] == span:
            self._close_backward()

    def _accumulated(self, span: str, param: Any) -> None:
        if self.backward is not None and self.backward[0] == span:
            self.pending.discard(id(param))
            if not self.pending:
                self._close_backward()

    def _backward_ended(self) -> None:
        self.end_queued = False
        self._close_backward()

    def _close_backward(self) -> None:
        if self.backward is not None:
            _exit(self.backward[1])
            self.backward, self.pending = None, set()


def _enter(name: str) -> Any:
    from torch.profiler import record_function

    span = record_function(name)
    span.__enter__()
    return span


def _exit(span: Any) -> None:
    span.__exit__(None, None, None)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a model's arguments or outputs (dicts, lists and tuples of them, nested)."""
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
