"""Project-specific losses and evals, added to dlscaffold's built-ins by name.

config.yml names a function under a model's ``losses`` or ``evals``; its ``inputs`` bind to the
function's arguments by name (a key that names an argument), the others in the order listed. A
function returns one value per sample, shape ``(B,)`` (or a scalar, taken as the batch mean); the
runtime weights, averages over samples and logs them. A name that clashes with a built-in
(``MultinomialNLL``, ``MSE``, ``MultinomialAccuracy``, ...) is an error, not a silent override.
"""

import torch
import torch.nn.functional as F

LABEL_SMOOTHING = 0.1


def label_smoothing_nll(class_logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Cross entropy against targets smoothed towards uniform: a guard against over-confidence.

    Args:
        class_logits: ``(B, K)`` scores from a model.
        class_idx: ``(B,)`` class labels from the dataset.

    Returns:
        ``(B,)`` the loss of each sample.
    """
    return F.cross_entropy(class_logits, class_idx.long().view(-1), reduction="none", label_smoothing=LABEL_SMOOTHING)


def get_project_loss_and_eval_dict():
    """``(losses, evals)``: the names config.yml may use, mapped to their functions."""
    losses = {"LabelSmoothingNLL": label_smoothing_nll}
    evals = {}
    return losses, evals


# Hooks: functions that config.yml's training_params.hooks calls by name during a run, as
# fn(ctx, **options), with the models in eval mode and no gradients (dlscaffold's docs/hooks.md). E.g.
#   hooks: [{name: StemFeatures, event: step, every: 200}]
# with this hook, which logs the first convolution's feature maps of one fixed digit as images:
#
# from sklearn.datasets import load_digits
#
# def stem_features(ctx, count=8):
#     model = ctx.models["DigitClassifier"]
#     digit = torch.tensor(load_digits().images[:1] / 16.0, dtype=torch.float32)[:, None]  # (1, 1, 8, 8)
#     features = model.stem(digit.to(next(model.parameters()).device))  # (1, stem_channels, 8, 8)
#     ctx.log_image("stem_features", features[0, :count, None])  # (count, 1, 8, 8), one image each


def get_project_hooks():
    """``{name: function}``: the hooks config.yml's ``training_params.hooks`` may name."""
    return {}  # e.g. {"StemFeatures": stem_features}
