"""Built-in losses and evals: the older deep_learning tool's set, on ``torch.nn.functional`` / ``torch.distributions``.

Every function takes tensors as arguments (the config's ``inputs`` bind to them by name where a key
names an argument, else in order) and returns one value per sample, shape ``(B,)``; the runtime
weights, averages and logs them. A project's own functions may also return a scalar (taken as the
batch mean) or any ``(B, ...)`` tensor (averaged over the non-batch dimensions).

Every built-in declares what its inputs must look like (:class:`Input`, :func:`declare`): the
runtime checks one batch against the declarations before training (:func:`check_inputs`), the
reference page ``docs/losses.md`` is generated from them (``python -m dlscaffold.losses_doc``), and
a built-in called with shapes that would broadcast raises ``ValueError`` instead of broadcasting.
Ensemble built-ins also give each member's values (:func:`members_fn`).

Shapes: ``B`` batch, ``K`` classes, ``E`` ensemble members, ``*D`` any event dimensions (possibly
none), the same ones wherever they appear in one built-in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal, kl_divergence

# ------------------------------------------------------------------------------ declarations

# kind -> (dtype test, the dtype it needs in words, the values it needs in words)
_KINDS: dict[str, tuple[Callable[[torch.Tensor], bool], str, str]] = {
    "float": (torch.Tensor.is_floating_point, "floating point", ""),
    "number": (lambda t: not t.is_complex(), "real", ""),
    "class": (
        lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool),
        "integer",
        "integers in [0, K)",
    ),
    "positive": (torch.Tensor.is_floating_point, "floating point", "positive"),
    "unit": (lambda t: not t.is_complex(), "real", "in [0, 1]"),
    "binary": (lambda t: not t.is_complex(), "real", "0 or 1"),
}


@dataclass(frozen=True)
class Input:
    """One declared input of a built-in.

    Attributes:
        name: the argument's name; the config lists a term's inputs in this order.
        shape: dimension names separated by spaces, e.g. ``"B K"``; ``"*D"`` (last) stands for any
            number of trailing dimensions, ``"..."`` for any shape at all.
        kind: ``"float"`` (a model output), ``"number"`` (any real dtype, converted as needed),
            ``"class"`` (integers in ``[0, K)``), ``"positive"`` (floats > 0), ``"unit"`` (in
            ``[0, 1]``) or ``"binary"`` (0 or 1). Dtypes are checked; of the values, only the
            ``[0, K)`` range (by :func:`check_inputs`); the others are documented.
    """

    name: str
    shape: str
    kind: str = "float"

    @functools.cached_property
    def dims(self) -> tuple[str, ...]:
        return tuple(self.shape.split())

    @property
    def shape_text(self) -> str:
        """``"B K"`` -> ``"(B, K)"``; ``"B"`` -> ``"(B,)"``; ``"..."`` -> ``"(any shape)"``."""
        dims = self.dims
        if dims == ("...",):
            return "(any shape)"
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"

    @property
    def values_text(self) -> str:
        return _KINDS[self.kind][2]


@dataclass(frozen=True)
class Spec:
    """What a built-in expects and computes: its inputs in order, its output and its formula."""

    inputs: tuple[Input, ...]
    output: str
    formula: str
    members: str = ""  # per-member values of an ensemble built-in, in words

    @property
    def same_shape(self) -> bool:
        """Several inputs that must all have one shape ``(B, *D)``."""
        dims = {i.dims for i in self.inputs}
        return len(self.inputs) > 1 and len(dims) == 1 and next(iter(dims))[-1].startswith("*")

    @property
    def expectation(self) -> str:
        """E.g. ``prediction and target of the same shape`` or ``class_logits (B, K) and class_idx (B,) ...``."""
        if not self.same_shape:
            return _join([" ".join(filter(None, (i.name, i.shape_text, i.values_text))) for i in self.inputs])
        notes: dict[str, list[str]] = {}
        for i in self.inputs:
            if i.values_text:
                notes.setdefault(i.values_text, []).append(i.name)
        text = f"{_join([i.name for i in self.inputs])} of the same shape"
        return ", ".join([text] + [f"{_join(names)} {note}" for note, names in notes.items()])


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _bind(dims: tuple[str, ...], shape: tuple[int, ...], bound: dict[str, Any]) -> bool:
    """Match ``shape`` to ``dims``, binding names to sizes; False on a clash with ``bound``."""
    if dims == ("...",):
        return True
    rest = dims[-1].startswith("*")
    fixed = dims[:-1] if rest else dims
    if len(shape) < len(fixed) or (not rest and len(shape) != len(fixed)):
        return False
    pairs: list[tuple[str, Any]] = list(zip(fixed, shape, strict=False))  # shape may go on: *D
    if rest:
        pairs.append((dims[-1], shape[len(fixed) :]))
    return all(bound.setdefault(name, size) == size for name, size in pairs)


def _problem(spec: Spec, tensors: Sequence[Any], read_values: bool) -> str | None:
    """One line saying how ``tensors`` miss ``spec``, or None when they fit."""
    if len(tensors) != len(spec.inputs):
        return f"expected {len(spec.inputs)} inputs ({_join([i.name for i in spec.inputs])}); found {len(tensors)}"
    bound: dict[str, Any] = {}
    for arg, t in zip(spec.inputs, tensors, strict=True):
        if not isinstance(t, torch.Tensor) or not _bind(arg.dims, tuple(t.shape), bound):
            return _mismatch(spec, tensors)
        fits, needs, _ = _KINDS[arg.kind]
        if not fits(t):
            return _mismatch(spec, tensors, f"{arg.name} is {t.dtype}, expected {needs}")
    for arg, t in zip(spec.inputs, tensors, strict=True):
        if read_values and arg.kind == "class" and "K" in bound:
            bad = _outside_classes(t, bound["K"])  # reads values: a sync, done once before training
            if bad is not None:
                return _mismatch(spec, tensors, f"{arg.name} holds {bad}, outside [0, {bound['K']})")
    return None


def _outside_classes(class_idx: torch.Tensor, k: int) -> int | None:
    """A value of ``class_idx`` outside ``[0, k)`` (the lowest if one is below 0), or None; one host read."""
    if not class_idx.numel():
        return None
    low, high = torch.stack(torch.aminmax(class_idx)).tolist()
    return low if low < 0 else high if high >= k else None


def class_inputs(fn: Callable[..., Any], tensors: Sequence[Any]) -> list[tuple[int, int, int]]:
    """Where a built-in reads class indices: ``(index input, logits input, K)`` for each class
    index input (positions in the config's order), K the classes the logits give; empty for a
    function without them, or inputs that do not fit its shapes (:func:`check_inputs` says that)."""
    spec = spec_of(fn)
    if spec is None or _problem(spec, tensors, read_values=False) is not None:
        return []
    at = next((i for i, arg in enumerate(spec.inputs) if "K" in arg.dims), None)
    if at is None:
        return []
    k = tensors[at].shape[spec.inputs[at].dims.index("K")]
    return [(i, at, k) for i, arg in enumerate(spec.inputs) if arg.kind == "class"]


def class_index_problem(fn: Callable[..., Any], tensors: Sequence[Any], sources: Sequence[str] = ()) -> str | None:
    """A class index outside the classes a built-in's logits give, as one line naming the index
    tensor, the value, and the model (its source in ``sources``, the config's order) with its
    number of classes, e.g. ``class_idx holds 9 but Classifier outputs 5 classes``; None when
    every index fits. Reads the indices: meant for the check before training."""
    spec = spec_of(fn)
    for i, at, k in class_inputs(fn, tensors):
        bad = _outside_classes(tensors[i], k)
        if bad is not None:
            logits = spec.inputs[at].name
            owner = classes_owner(sources[at] if len(sources) > at else "", logits)
            return (
                f"{spec.inputs[i].name} holds {bad} but {owner} {k} classes ({logits} {tuple(tensors[at].shape)}); "
                f"expected class indices in [0, {k}): fix the labels, or the model's number of classes"
            )
    return None


def classes_owner(source: str, logits: str) -> str:
    """``"Classifier outputs"`` for logits from a model, else ``"<logits> has"``."""
    return f"{source} outputs" if source and source not in ("dataset", "trainer") else f"{logits} has"


def _mismatch(spec: Spec, tensors: Sequence[Any], detail: str = "") -> str:
    found = _join([str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in tensors])
    return f"expected {spec.expectation}; found {found}" + (f"; {detail}" if detail else "")


def declare(
    *inputs: Input,
    formula: str,
    output: str = "(B,)",
    members: Callable[..., torch.Tensor] | None = None,
    members_formula: str = "",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Declare a built-in's inputs and guard it: shapes that do not fit raise ``ValueError``.

    The guard reads shapes and dtypes only (no values, so no GPU sync). ``members`` (an ensemble's
    per-member values, ``(B, E)``) is guarded the same way and set as ``fn.members``.

    Example:
        >>> @declare(Input("prediction", "B *D"), Input("target", "B *D", "number"), formula="...")
        ... def my_l1(prediction, target):
        ...     return per_sample((prediction - target).abs())
    """
    spec = Spec(tuple(inputs), output, formula, members_formula)

    def guard(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def guarded(*tensors: torch.Tensor, **options: Any) -> torch.Tensor:
            problem = _problem(spec, tensors, read_values=False)
            if problem is not None:
                raise ValueError(problem)
            return fn(*tensors, **options)

        guarded.spec = spec  # type: ignore[attr-defined]
        return guarded

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        guarded = guard(fn)
        if members is not None:
            guarded.members = guard(members)  # type: ignore[attr-defined]
        return guarded

    return decorate


def spec_of(fn: Callable[..., Any]) -> Spec | None:
    """The declaration of a built-in (or of any function made with :func:`declare`), else None."""
    spec = getattr(fn.func if isinstance(fn, functools.partial) else fn, "spec", None)  # a partial: a term's options
    return spec if isinstance(spec, Spec) else None


def check_inputs(fn: Callable[..., Any], tensors: list[torch.Tensor]) -> str | None:
    """Whether ``tensors`` fit what a built-in declares, as one line (None when they fit).

    Reads shapes and dtypes, and for class indices their values (a sync; meant to run once, before
    training, on a small batch). A function without a declaration (a project's own) always passes.

    Args:
        fn: the loss or eval function, as registered.
        tensors: its inputs, in the config's order.

    Returns:
        None, or e.g. ``expected prediction and target of the same shape; found (4, 1) and (4,)``.

    Example:
        >>> check_inputs(mse, [torch.zeros(4, 1), torch.zeros(4)])
        'expected prediction and target of the same shape; found (4, 1) and (4,)'
    """
    spec = spec_of(fn)
    return None if spec is None else _problem(spec, tensors, read_values=True)


def members_fn(fn: Callable[..., Any]) -> Callable[..., torch.Tensor] | None:
    """The per-member values of an ensemble loss or eval, or None for one that has none.

    Contract: ``fn.members`` is a function taking the same positional tensors as ``fn`` and
    returning one value per sample and member, shape ``(B, E)``. The runtime logs the mean of
    column ``i`` over samples as ``<logging_name>_<i>`` beside ``fn``'s own (ensemble) value; the
    members' values are for logging only (the objective uses ``fn``'s value) and may be computed
    under ``torch.no_grad()``. A project's function opts in by setting the attribute itself.

    Example:
        >>> members_fn(LOSSES["L1Ensemble"])(torch.zeros(4, 3, 2), torch.ones(4, 2)).shape
        torch.Size([4, 3])
    """
    members = getattr(fn, "members", None)
    return members if callable(members) else None


# ------------------------------------------------------------------------------------ helpers


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """Average all but the batch dimension: ``(B, ...) -> (B,)``; a scalar stays a scalar."""
    return values if values.dim() <= 1 else values.flatten(1).mean(dim=1)


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, without the call when it has that dtype already (a step calls it often)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _per_member(fn: Callable[..., torch.Tensor], ensemble: torch.Tensor, *shared: torch.Tensor) -> torch.Tensor:
    """``fn`` on every member at once: ``ensemble`` ``(B, E, ...)``, ``shared`` ``(B, ...)`` -> ``(B, E)``."""
    b, e = ensemble.shape[:2]
    repeated = [t.unsqueeze(1).expand(b, e, *t.shape[1:]).flatten(0, 1) for t in shared]  # (B*E, ...)
    return fn(ensemble.flatten(0, 1), *repeated).view(b, e)


def _mean_log_probs(class_logits: torch.Tensor) -> torch.Tensor:
    """Members' logits ``(B, E, K)`` -> log of the members' mean probabilities ``(B, K)``."""
    return torch.logsumexp(F.log_softmax(class_logits, dim=-1), dim=1) - math.log(class_logits.shape[1])


_LOGITS, _CLASS_IDX = Input("class_logits", "B K"), Input("class_idx", "B", "class")
_PREDICTION, _TARGET = Input("prediction", "B *D"), Input("target", "B *D", "number")
_MEMBERS, _ENSEMBLE_LOGITS = Input("prediction", "B E *D"), Input("class_logits", "B E K")

# ----------------------------------------------------------------------------------- losses


@declare(_LOGITS, _CLASS_IDX, formula="-log softmax(class_logits)[class_idx]")
def multinomial_nll(
    class_logits: torch.Tensor, class_idx: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross entropy of logits ``(B, K)`` against class indices ``(B,)``.

    Option ``label_smoothing`` (0 to 1, default 0): the target mixes the class with the uniform
    distribution, as in :func:`torch.nn.functional.cross_entropy`.

    The older tool's ``MultinomialNLLwSoftmax``; on log-probabilities (``log_softmax`` outputs)
    it equals its ``MultinomialNLL`` (``-class_logits[class_idx]``), since ``log_softmax`` leaves
    log-probabilities unchanged.
    """
    return F.cross_entropy(
        class_logits, as_dtype(class_idx, torch.long), reduction="none", label_smoothing=label_smoothing
    )


@declare(
    Input("logits", "B *D"),
    Input("labels", "B *D", "unit"),
    formula="mean over D of -(labels log σ(logits) + (1 - labels) log(1 - σ(logits)))",
)
def binomial_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy of logits against labels in [0, 1], both ``(B, *D)``."""
    return per_sample(F.binary_cross_entropy_with_logits(logits, as_dtype(labels, logits.dtype), reduction="none"))


@declare(_LOGITS, formula="-Σ_k p_k log p_k, p = softmax(class_logits)")
def multinomial_entropy(class_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by logits ``(B, K)``."""
    return Categorical(logits=class_logits).entropy()


@declare(
    _LOGITS,
    Input("target_logits", "B K"),
    formula="KL(q ‖ p) = Σ_k q_k (log q_k - log p_k), p = softmax(class_logits), q = softmax(target_logits)",
)
def multinomial_kl(class_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)``: the target's categorical q against the model's p, as the older deep_learning tool computed.

    With ``p = softmax(class_logits)`` and ``q = softmax(target_logits)``, both ``(B, K)``::

        KL(q || p) = sum_k q_k (log q_k - log p_k)      # (B,)

    i.e. ``kl_divergence(Categorical(logits=target_logits), Categorical(logits=class_logits))``:
    the second input is the reference distribution (distillation: teacher second). For the other
    direction, swap the inputs in the config. Computed with ``F.kl_div`` on log-probabilities, so a
    probability that underflows to 0 gives a large finite value rather than ``inf``.
    """
    log_p, log_q = F.log_softmax(class_logits, dim=-1), F.log_softmax(target_logits, dim=-1)
    return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(dim=-1)


@declare(
    Input("mean", "B *D"),
    Input("variance", "B *D", "positive"),
    Input("target", "B *D", "number"),
    formula="Σ over D of ½ (log(2π variance) + (target - mean)² / variance)",
)
def gaussian_nll(mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(mean, variance), summed over ``D``."""
    nll = -Normal(mean, variance.clamp_min(1e-12).sqrt()).log_prob(as_dtype(target, mean.dtype))  # (B, *D)
    return nll.flatten(1).sum(dim=1) if nll.dim() > 1 else nll


@declare(
    Input("mean_p", "B *D"),
    Input("var_p", "B *D", "positive"),
    Input("mean_q", "B *D"),
    Input("var_q", "B *D", "positive"),
    formula="KL(N_p ‖ N_q) = Σ over D of ½ (log(var_q / var_p) + (var_p + (mean_p - mean_q)²) / var_q - 1)",
)
def gaussian_kl(mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, var_p) || N(mean_q, var_q)) for diagonal Gaussians, summed over ``D``."""
    kl = kl_divergence(Normal(mean_p, var_p.clamp_min(1e-12).sqrt()), Normal(mean_q, var_q.clamp_min(1e-12).sqrt()))
    return kl.flatten(1).sum(dim=1) if kl.dim() > 1 else kl


@declare(
    Input("loss", "..."),
    formula="loss, averaged over its non-batch dimensions (a scalar: the batch mean)",
    output="(B,) or a scalar",
)
def identity_loss(loss: torch.Tensor) -> torch.Tensor:
    """A loss the model computed itself, passed through (averaged over non-batch dims)."""
    return per_sample(loss)


@declare(_PREDICTION, _TARGET, formula="mean over D of (prediction - target)²")
def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, both ``(B, *D)`` (also registered as the older tool's ``L2``)."""
    return per_sample(F.mse_loss(prediction, as_dtype(target, prediction.dtype), reduction="none"))


@declare(_PREDICTION, _TARGET, formula="mean over D of |prediction - target|")
def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample, both ``(B, *D)``."""
    return per_sample(F.l1_loss(prediction, as_dtype(target, prediction.dtype), reduction="none"))


@declare(_PREDICTION, _TARGET, formula="mean over D of smooth_l1(prediction - target), β = beta (option, default 1)")
def smooth_l1(prediction: torch.Tensor, target: torch.Tensor, *, beta: float = 1.0) -> torch.Tensor:
    """Huber-like error per sample (quadratic below ``beta``, linear above), both ``(B, *D)``.

    Option ``beta`` (default 1): where the quadratic part ends.
    """
    return per_sample(F.smooth_l1_loss(prediction, as_dtype(target, prediction.dtype), reduction="none", beta=beta))


def _l1_members(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _per_member(l1, prediction, target)  # (B, E)


@declare(
    _MEMBERS,
    _TARGET,
    members=_l1_members,
    members_formula="L1(prediction[:, e], target)",
    formula="Σ_e mean over D of |prediction[:, e] - target|",
)
def l1_ensemble(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of every member against one target, summed over members: ``(B, E, *D)``, ``(B, *D)`` -> ``(B,)``.

    As in the older tool, the objective is the sum of the members' losses, so each member gets the
    gradient it would get trained alone; the members' own values are ``members_fn(l1_ensemble)``.
    """
    return _l1_members(prediction, target).sum(dim=1)


def _kl_members(class_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    return _per_member(multinomial_kl, class_logits, target_logits)  # (B, E)


@declare(
    _ENSEMBLE_LOGITS,
    Input("target_logits", "B K"),
    members=_kl_members,
    members_formula="MultinomialKL(class_logits[:, e], target_logits)",
    formula="Σ_e KL(q ‖ p_e), p_e = softmax(class_logits[:, e]), q = softmax(target_logits)",
)
def multinomial_kl_ensemble(class_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """:func:`multinomial_kl` of every member against one target, summed over members.

    ``class_logits`` ``(B, E, K)``, ``target_logits`` ``(B, K)``; per sample
    ``sum_e KL(softmax(target_logits) || softmax(class_logits[:, e]))`` (the older tool's direction:
    the target is the reference distribution). Members' values: ``members_fn``.
    """
    return _kl_members(class_logits, target_logits).sum(dim=1)


# ------------------------------------------------------------------------------------ evals


@declare(_LOGITS, _CLASS_IDX, formula="1 if argmax_k class_logits = class_idx, else 0")
def multinomial_accuracy(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class of ``(B, K)`` logits equals the label ``(B,)``, else 0.0."""
    return (class_logits.argmax(dim=-1) == class_idx).float()


@declare(Input("logits", "B *D"), Input("labels", "B *D", "binary"), formula="mean over D of [(logits > 0) = labels]")
def binomial_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``D`` binary predictions (logit > 0) that match the 0/1 labels."""
    return per_sample(((logits > 0) == labels.bool()).float())


@declare(_PREDICTION, _TARGET, formula="mean over D of [|prediction - target| ≤ 0.1 |target|]")
def continuous_accuracy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``D`` values within 10% (relative) of the target."""
    error = (prediction - target).abs()
    return per_sample((error <= 0.1 * target.abs()).float())


@declare(_PREDICTION, _TARGET, formula="‖prediction - target‖₂ over all of D")
def continuous_error_mag(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the error vector per sample."""
    error = (prediction - target).flatten(1) if prediction.dim() > 1 else (prediction - target).unsqueeze(1)
    return error.norm(dim=1)


def _accuracy_members(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    return _per_member(multinomial_accuracy, class_logits, class_idx)  # (B, E)


@declare(
    _ENSEMBLE_LOGITS,
    _CLASS_IDX,
    members=_accuracy_members,
    members_formula="MultinomialAccuracy(class_logits[:, e], class_idx)",
    formula="MultinomialAccuracy of log mean_e softmax(class_logits[:, e])",
)
def multinomial_accuracy_ensemble(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Accuracy of an ensemble's averaged prediction; logits ``(B, E, K)``, labels ``(B,)``."""
    return multinomial_accuracy(_mean_log_probs(class_logits), class_idx)


def _entropy_members(class_logits: torch.Tensor) -> torch.Tensor:
    return _per_member(multinomial_entropy, class_logits)  # (B, E)


@declare(
    _ENSEMBLE_LOGITS,
    members=_entropy_members,
    members_formula="MultinomialEntropy(class_logits[:, e])",
    formula="MultinomialEntropy of log mean_e softmax(class_logits[:, e])",
)
def multinomial_entropy_ensemble(class_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of an ensemble's averaged prediction; logits ``(B, E, K)``."""
    return multinomial_entropy(_mean_log_probs(class_logits))


def _error_mag_members(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _per_member(continuous_error_mag, prediction, target)  # (B, E)


@declare(
    _MEMBERS,
    _TARGET,
    members=_error_mag_members,
    members_formula="ContinuousErrorMag(prediction[:, e], target)",
    formula="‖mean_e prediction[:, e] - target‖₂ over all of D",
)
def continuous_error_mag_ensemble(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Error magnitude of the ensemble mean; predictions ``(B, E, *D)``, target ``(B, *D)``."""
    return continuous_error_mag(prediction.mean(dim=1), target)


def _continuous_accuracy_members(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _per_member(continuous_accuracy, prediction, target)  # (B, E)


@declare(
    _MEMBERS,
    _TARGET,
    members=_continuous_accuracy_members,
    members_formula="ContinuousAccuracy(prediction[:, e], target)",
    formula="ContinuousAccuracy of mean_e prediction[:, e]",
)
def continuous_accuracy_ensemble(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`continuous_accuracy` of the ensemble mean; predictions ``(B, E, *D)``, target ``(B, *D)``."""
    return continuous_accuracy(prediction.mean(dim=1), target)


LOSSES = {
    "MultinomialNLL": multinomial_nll,
    "MultinomialNLLwSoftmax": multinomial_nll,
    "BinomialNLL": binomial_nll,
    "MultinomialEntropy": multinomial_entropy,
    "MultinomialKL": multinomial_kl,
    "MultinomialKLEnsemble": multinomial_kl_ensemble,
    "GaussianNLL": gaussian_nll,
    "GaussianKL": gaussian_kl,
    "IdentityLoss": identity_loss,
    "MSE": mse,
    "L2": mse,
    "L1": l1,
    "L1Ensemble": l1_ensemble,
    "SmoothL1": smooth_l1,
}

EVALS = {
    "MultinomialAccuracy": multinomial_accuracy,
    "MultinomialEntropy": multinomial_entropy,
    "BinomialAccuracy": binomial_accuracy,
    "ContinuousAccuracy": continuous_accuracy,
    "ContinuousErrorMag": continuous_error_mag,
    "MultinomialAccuracyEnsemble": multinomial_accuracy_ensemble,
    "MultinomialEntropyEnsemble": multinomial_entropy_ensemble,
    "ContinuousErrorMagEnsemble": continuous_error_mag_ensemble,
    "ContinuousAccuracyEnsemble": continuous_accuracy_ensemble,
}
