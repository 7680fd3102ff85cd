"""Dice + cross-entropy that also learns from partially labelled cases (the marginal loss of Shi et al.,
"Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA 2021).

In a partial case the voxels marked ``UNKNOWN`` are background *or* one of the case's unannotated labels,
so their cross-entropy uses the summed probability of that set, and Dice is taken only over labels the
case annotates (background too when it annotates everything). On fully labelled batches this is MONAI's
``DiceCELoss(to_onehot_y=True, softmax=True)`` with unit weights.
"""

from __future__ import annotations

import torch

from .data import UNKNOWN


class PartialDiceCELoss(torch.nn.Module):
    """Soft Dice (per sample and class) plus cross-entropy on ``(B, C, ...)`` logits.

    Args:
        smooth: added to the numerator and denominator of each Dice ratio.
    """

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, missing: torch.Tensor | None = None):
        """``target``: ``(B, 1, ...)`` class indices or ``UNKNOWN``; ``missing``: ``(B, C)`` bool, the
        unannotated classes of each sample (None: all annotated)."""
        batch, classes = logits.shape[:2]
        target = target[:, 0].long()
        if missing is None:
            missing = torch.zeros(batch, classes, dtype=torch.bool, device=logits.device)
        missing = missing.to(logits.device).bool()
        unknown = target == UNKNOWN
        known_target = torch.where(unknown, torch.zeros_like(target), target)
        log_probs = torch.log_softmax(logits, 1)
        picked = log_probs.gather(1, known_target[:, None])[:, 0]
        merged_set = missing.clone()
        merged_set[:, 0] = True  # background or any unannotated class
        spatial = (1,) * (logits.ndim - 2)
        merged = torch.logsumexp(log_probs.masked_fill(~merged_set.view(batch, classes, *spatial), -torch.inf), 1)
        cross_entropy = -torch.where(unknown, merged, picked).mean()

        probs = log_probs.exp()
        one_hot = torch.nn.functional.one_hot(known_target, classes).movedim(-1, 1).to(probs.dtype)
        one_hot = one_hot * (~unknown)[:, None].to(probs.dtype)
        dims = tuple(range(2, logits.ndim))
        intersection = (probs * one_hot).sum(dims)
        denominator = probs.sum(dims) + one_hot.sum(dims)
        dice = 1 - (2 * intersection + self.smooth) / (denominator + self.smooth)
        scored = ~missing
        scored[:, 0] = ~missing.any(1)  # background is known only where every class is annotated
        return cross_entropy + (dice * scored).sum() / scored.sum().clamp(min=1)
