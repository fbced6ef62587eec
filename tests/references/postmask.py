"""The post-mask loss (Eq. 5) on probabilities: the reference of ``ssp.engine.losses.postmask_frames``.

The foreground probability from Mask2Former's semantic scores, clamped, and PyTorch's binary
cross-entropy on it. CUDA autocast refuses that op, so the project computes the same value from
the probability's logit; the tests hold the two equal in float32, values and gradients.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ssp.model.premask import postmask_label
from ssp.model.ssp import semantic_probs


def foreground_prob(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """[N, h, w]: the foreground's share of the semantic scores, s_fg / (s_0 + s_fg) with s_fg the sum
    of every class's score but background 0's (binary: the sounding class's), the denominator
    floored at 1e-6."""
    probs = semantic_probs(class_logits, mask_logits)
    fg = probs[:, 1:].sum(1)
    return (fg / (probs[:, 0] + fg).clamp_min(1e-6)).clamp(0, 1)


def postmask_frames(class_logits, mask_logits, labels, flow_mask) -> torch.Tensor:
    """[N]: BCE between the clamped foreground probability and M_Post, averaged over each frame, in
    the logits' dtype (float64 gives the formula's value without float32's rounding of 1 - p)."""
    fg = foreground_prob(class_logits, mask_logits).clamp(1e-6, 1 - 1e-6)
    target = postmask_label(flow_mask, labels > 0).unsqueeze(1).to(fg.dtype)
    target = F.interpolate(target, size=fg.shape[-2:], mode="area").squeeze(1)
    return F.binary_cross_entropy(fg, target, reduction="none").flatten(1).mean(1)
