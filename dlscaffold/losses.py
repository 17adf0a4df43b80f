"""Built-in losses and evals: the seed's set, on ``torch.nn.functional`` and ``torch.distributions``.

Every function takes tensors positionally (in the order of the config's ``inputs``) and returns one
value per sample, shape ``(B,)``; the runtime weights, averages and logs them. A project's own
functions may also return a scalar (taken as the batch mean) or any ``(B, ...)`` tensor (averaged
over the non-batch dimensions).

Shapes: ``B`` batch, ``K`` classes, ``E`` ensemble members, ``D`` any event dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal, kl_divergence


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """Average all but the batch dimension: ``(B, ...) -> (B,)``; a scalar stays a scalar."""
    return values if values.dim() <= 1 else values.flatten(1).mean(dim=1)


# ----------------------------------------------------------------------------------- losses


def multinomial_nll(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Cross entropy of logits ``(B, K)`` against class indices ``(B,)``."""
    return F.cross_entropy(class_logits, class_idx.long().view(-1), reduction="none")


def binomial_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy of logits against 0/1 labels, both ``(B, D)``."""
    return per_sample(F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none"))


def multinomial_entropy(class_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by logits ``(B, K)``."""
    return Categorical(logits=class_logits).entropy()


def multinomial_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between categorical distributions given by logits ``(B, K)``."""
    return kl_divergence(Categorical(logits=p_logits), Categorical(logits=q_logits))


def gaussian_nll(mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(mean, variance), summed over ``D``."""
    nll = -Normal(mean, variance.clamp_min(1e-12).sqrt()).log_prob(target)  # (B, D)
    return nll.flatten(1).sum(dim=1) if nll.dim() > 1 else nll


def gaussian_kl(mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, var_p) || N(mean_q, var_q)) for diagonal Gaussians, summed over ``D``."""
    kl = kl_divergence(Normal(mean_p, var_p.clamp_min(1e-12).sqrt()), Normal(mean_q, var_q.clamp_min(1e-12).sqrt()))
    return kl.flatten(1).sum(dim=1) if kl.dim() > 1 else kl


def identity_loss(loss: torch.Tensor) -> torch.Tensor:
    """A loss the model computed itself, passed through (averaged over non-batch dims)."""
    return per_sample(loss)


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return per_sample(F.mse_loss(prediction, target.to(prediction.dtype), reduction="none"))


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return per_sample(F.l1_loss(prediction, target.to(prediction.dtype), reduction="none"))


def smooth_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return per_sample(F.smooth_l1_loss(prediction, target.to(prediction.dtype), reduction="none"))


# ------------------------------------------------------------------------------------ evals


def multinomial_accuracy(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class of ``(B, K)`` logits equals the label ``(B,)``, else 0.0."""
    return (class_logits.argmax(dim=-1) == class_idx.view(-1)).float()


def binomial_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``D`` binary predictions (logit > 0) that match the 0/1 labels."""
    return per_sample(((logits > 0) == labels.bool()).float())


def continuous_accuracy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``D`` values within 10% (relative) of the target."""
    error = (prediction - target).abs()
    return per_sample((error <= 0.1 * target.abs()).float())


def continuous_error_mag(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the error vector per sample."""
    error = (prediction - target).flatten(1) if prediction.dim() > 1 else (prediction - target).unsqueeze(1)
    return error.norm(dim=1)


def _ensemble_logits(class_logits: torch.Tensor) -> torch.Tensor:
    """Members' logits ``(B, E, K)`` -> log of the mean predicted probabilities ``(B, K)``."""
    return torch.logsumexp(F.log_softmax(class_logits, dim=-1), dim=1) - torch.log(
        torch.tensor(float(class_logits.shape[1]), device=class_logits.device)
    )


def multinomial_accuracy_ensemble(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Accuracy of an ensemble's averaged prediction; logits ``(B, E, K)``."""
    return multinomial_accuracy(_ensemble_logits(class_logits), class_idx)


def multinomial_entropy_ensemble(class_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of an ensemble's averaged prediction; logits ``(B, E, K)``."""
    return multinomial_entropy(_ensemble_logits(class_logits))


def continuous_error_mag_ensemble(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Error magnitude of the ensemble mean; predictions ``(B, E, D)``, target ``(B, D)``."""
    return continuous_error_mag(prediction.mean(dim=1), target)


LOSSES = {
    "MultinomialNLL": multinomial_nll,
    "BinomialNLL": binomial_nll,
    "MultinomialEntropy": multinomial_entropy,
    "MultinomialKL": multinomial_kl,
    "GaussianNLL": gaussian_nll,
    "GaussianKL": gaussian_kl,
    "IdentityLoss": identity_loss,
    "MSE": mse,
    "L1": l1,
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
}
