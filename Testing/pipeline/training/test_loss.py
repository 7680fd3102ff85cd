"""The training loss: MONAI's DiceCE on fully labelled data, the marginal loss on partially labelled data."""

import pytest
import torch
from monai.losses import DiceCELoss
from TokenUNetSegmentLib.pipeline.training.data import UNKNOWN
from TokenUNetSegmentLib.pipeline.training.loss import PartialDiceCELoss


def test_equals_monai_dice_ce_on_fully_labelled_batches():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 6, 5, 4), torch.randint(0, 4, (2, 1, 6, 5, 4))
    expected = DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    assert PartialDiceCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    no_missing = torch.zeros(2, 4, dtype=torch.bool)
    assert PartialDiceCELoss()(logits, target, no_missing).item() == pytest.approx(expected.item(), rel=1e-6)


def scene():
    """One sample: class 1 annotated in the left half, the rest unknown; class 2 unannotated."""
    target = torch.full((1, 1, 8, 4, 4), UNKNOWN)
    target[:, :, :4] = 1
    missing = torch.tensor([[False, False, True]])
    return target, missing


def logits_for(right_half_class: int, confidence=6.0):
    logits = torch.zeros(1, 3, 8, 4, 4)
    logits[:, 1, :4] = confidence
    logits[:, right_half_class, 4:] = confidence
    return logits


def test_unknown_voxels_may_be_background_or_an_unannotated_label():
    target, missing = scene()
    loss = PartialDiceCELoss()
    as_background = loss(logits_for(0), target, missing)
    as_unannotated = loss(logits_for(2), target, missing)
    as_annotated = loss(logits_for(1), target, missing)  # class 1 is annotated: it cannot be in the unknown half
    assert as_background.item() == pytest.approx(as_unannotated.item(), rel=1e-5)
    assert as_annotated.item() > as_background.item() + 0.5


def test_gradients_flow_and_ignore_the_unannotated_class_dice():
    target, missing = scene()
    logits = logits_for(2).requires_grad_()
    PartialDiceCELoss()(logits, target, missing).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
