"""Eq. 4 and Eq. 5: L = L_AVS + lambda'_mask * L'_mask.

L_AVS is Mask2Former's loss (Hungarian matching; class cross-entropy with no-object weight 0.1,
sigmoid BCE and dice on sampled points; the same on every decoder layer), weighted
class 2 / mask 5 / dice 5. L'_mask (the post-mask loss) is a BCE between the predicted
foreground probability and M_Post = M_O ∩ M_GT, weight 10.

The loss is computed per video and averaged over the videos of the batch, so a batch of B
videos on one process and B processes with one video each give the same loss (except where a
silent MS3 video, which counts for nothing, sits beside others: one process averages over the
videos kept, DDP over the processes). L_AVS comes from
``criterion.VideoBatchLoss`` (all videos and decoder layers at once); the Hugging Face loss of one
video at a time, the reference it is tested against, is ``tests/references/hf_loss.py``.
"""
from __future__ import annotations

import zlib

import torch
from torch.nn import functional as F

from ssp.model.premask import postmask_label
from ssp.model.ssp import SSPOutput, foreground_logit


def _slice(out: SSPOutput, idx: torch.Tensor) -> SSPOutput:
    return SSPOutput([c[idx] for c in out.class_logits], [m[idx] for m in out.mask_logits])


def point_seed(seed: int, step: int, video_id: str) -> int:
    """Seed of the matcher's and the loss's random point sampling for one video at one step."""
    return (seed * 1_000_003 + step * 7919 + zlib.crc32(video_id.encode())) % (2**63)


def postmask_frames(out: SSPOutput, labels: torch.Tensor, flow_mask: torch.Tensor) -> torch.Tensor:
    """L'_mask of each frame (Eq. 5): [N], the binary cross-entropy between the predicted
    foreground probability (the foreground's share of the semantic scores, clamped to
    [1e-6, 1 - 1e-6]: ``foreground_logit``) and M_Post = M_O ∩ M_GT (area-resized to the mask
    logits), averaged over the frame's pixels.

    It is taken on the probability's logit (``foreground_logit``) with
    ``binary_cross_entropy_with_logits``, in float32: the same value as the cross-entropy on the
    probability, and legal and stable under bf16 autocast, where CUDA autocast refuses
    ``binary_cross_entropy``."""
    cls, msk = out.final
    z = foreground_logit(cls, msk)                                                  # [N, h, w] float32
    target = postmask_label(flow_mask, labels > 0).unsqueeze(1)
    target = F.interpolate(target, size=z.shape[-2:], mode="area").squeeze(1)
    return F.binary_cross_entropy_with_logits(z, target, reduction="none").flatten(1).mean(1)


def network_targets(labels: torch.Tensor, size: int) -> torch.Tensor:
    """[N, H, W] ground truth (224) -> [N, size, size] at the network's input size, nearest, as
    L_AVS's targets: AAVS's image processor resizes its 224 masks to 384 with PIL's nearest
    (``_preprocess_mask``, ``avs/transformers/models/mask2former/image_processing_mask2former.py``
    613-617), which ``nearest-exact`` equals."""
    if labels.shape[-1] == size and labels.shape[-2] == size:
        return labels
    return F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].to(labels.dtype)


MS3_SUBSETS = ("v1m", "ms3")


def silent_ms3(batch: dict, v: int) -> bool:
    """Whether video ``v`` of the batch is an MS3 video whose ground truth is empty on every
    supervised frame. AAVS gives such a video zero loss, with no gradient (``get_loss``,
    ``avs/utils/utility.py`` 134-138: ``task == 'v1m' and mean(mask) == 0``), so it is left out."""
    subsets = batch.get("subsets")
    if not subsets or subsets[v] not in MS3_SUBSETS:
        return False
    frames = (batch["video_index"] == v) & batch["has_mask"]
    return not bool((batch["labels"][frames] > 0).any())


def video_losses(model, out: SSPOutput, batch: dict, *, binary: bool, postmask_weight: float,
                 use_postmask: bool, seed: int | None = None, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over videos of (L_AVS + weight * L'_mask) over each video's frames with ground truth.

    L_AVS of all videos and decoder layers comes from one ``criterion.VideoBatchLoss`` call (the
    Hugging Face Mask2Former loss, batched). With ``seed``, each video's random points are drawn
    from a generator seeded by (seed, step, video), so the loss of a video does not depend on
    which process or batch position computes it.
    """
    from ssp.engine.criterion import VideoBatchLoss

    inner = model.module if hasattr(model, "module") else model
    vi, has = batch["video_index"].cpu(), batch["has_mask"].cpu()            # one copy each to the host
    kept = [v for v in range(int(vi.max()) + 1) if bool((has & (vi == v)).any())]
    if binary:
        kept = [v for v in kept if not silent_ms3(batch, v)]
    if not kept:
        # a zero that reaches every output (not the parameters directly, which DDP would mark twice)
        zero = sum(x.sum() for x in out.class_logits + out.mask_logits) * 0.0
        return zero, {}
    rows = [torch.nonzero((vi == v) & has).squeeze(1) for v in kept]
    dev = out.mask_logits[-1].device
    frames = torch.cat(rows).to(dev)
    video_of_frame = [k for k, r in enumerate(rows) for _ in range(len(r))]
    part = _slice(out, frames)
    labels = batch["labels"][frames]
    seeds = [None if seed is None else point_seed(seed, step, batch["video_ids"][v]) for v in kept]
    per_video = VideoBatchLoss(inner.m2f)(part.class_logits, part.mask_logits, network_targets(labels, inner.size),
                                          video_of_frame, seeds, binary)
    names = ["class", "mask", "dice"]
    table = torch.stack([torch.stack([t[n] for n in names]) for t in per_video])      # [V, 3]
    if use_postmask:
        per_frame = postmask_frames(part, labels, batch["flow_mask"][frames])
        index = torch.as_tensor(video_of_frame, device=dev)
        sums = torch.zeros(len(kept), dtype=per_frame.dtype, device=dev).index_add(0, index, per_frame)
        counts = torch.as_tensor([len(r) for r in rows], dtype=per_frame.dtype, device=dev)
        table = torch.cat([table, (postmask_weight * sums / counts).unsqueeze(1).to(table.dtype)], dim=1)
        names.append("postmask")
    values = table.detach().float().cpu()                                      # one copy for logging and checks
    for k, v in enumerate(kept):
        for j, name in enumerate(names):
            if not torch.isfinite(values[k, j]):
                raise FloatingPointError(f"loss term '{name}' is {values[k, j].item()} for video {batch['video_ids'][v]}")
    n = len(kept)
    logged = {name: float(values[:, j].sum()) / n for j, name in enumerate(names)}
    return table.sum() / n, logged
