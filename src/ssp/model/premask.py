"""SSP's pre-mask (Eq. 2) and post-mask label (Eq. 5).

Eq. 2: M_Pre = 1 where the flow mask M_O and the ground truth M_GT are both set, 0.5 where
exactly one of them is set, 0 elsewhere; for binary masks that is (M_O + M_GT) / 2. The frame
is multiplied by M_Pre before it is encoded.

At test time M_GT is unknown and the config chooses what stands in for it
(``train.premask_test``):
  * ``stage1`` (default): the binary prediction of the stage-1 model (the baseline for S4/MS3);
  * ``empty``: the literal reading of section 4.1 ("M_GT is utilized during training and excluded
    in testing"): M_GT empty, so Eq. 2 gives 0.5 on M_O and 0 elsewhere;
  * ``flow``: M_GT unknown everywhere, taken as 0.5, so M_Pre = (M_O + 0.5) / 2
    (0.75 where there is motion, 0.25 elsewhere);
  * ``none``: no pre-mask at test (M_Pre = 1).
Training frames without ground truth take the flow rule (v1s train frames 1-4 with
``train.s4_train_frames: all``; AAVS's ``first`` repeats frame 0, which has it). Validation uses
test's stand-in.

Eq. 5: the post-mask label is M_Post = M_O ∩ M_GT.
"""
from __future__ import annotations

import torch

from ssp.variants import PREMASK_TEST as TEST_CHOICES


def premask(flow_mask: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Eq. 2 on binary masks of any shape: values in {0, 0.5, 1}."""
    return (flow_mask.float() + gt.float()) / 2.0


def premask_flow_only(flow_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2 with an unknown ground truth (0.5 everywhere)."""
    return (flow_mask.float() + 0.5) / 2.0


def premask_for_test(flow_mask: torch.Tensor, stage1: torch.Tensor | None, choice: str) -> torch.Tensor:
    """The test-time M_Pre for the configured stand-in of M_GT."""
    if choice == "stage1":
        if stage1 is None:
            raise ValueError("premask_test 'stage1' needs the stage-1 predictions")
        return premask(flow_mask, stage1 > 0.5)
    if choice == "empty":
        return premask(flow_mask, torch.zeros_like(flow_mask))
    if choice == "flow":
        return premask_flow_only(flow_mask)
    if choice == "none":
        return torch.ones_like(flow_mask, dtype=torch.float32)
    raise ValueError(f"unknown premask_test {choice!r} (one of {TEST_CHOICES})")


def postmask_label(flow_mask: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Eq. 5 label: M_O ∩ M_GT as float {0, 1}."""
    return ((flow_mask > 0) & (gt > 0)).float()
