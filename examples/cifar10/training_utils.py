"""Project losses and evals, added to dlscaffold's built-ins."""

import torch.nn.functional as F


def label_smoothed_nll(class_logits, class_idx, smoothing=0.2):
    """Cross entropy against targets that put ``1 - smoothing`` on the true class.

    Discourages over-confident logits; on CIFAR-10 it is worth about half a point of accuracy.
    Returns one value per sample, (B,).
    """
    return F.cross_entropy(class_logits.float(), class_idx, reduction="none", label_smoothing=smoothing)


def get_project_loss_and_eval_dict():
    return {"LabelSmoothedNLL": label_smoothed_nll}, {}
