"""The Hugging Face Mask2Former loss, one video at a time: the reference of ``ssp.engine.criterion``.

This is how AAVS's code computes L_AVS (``get_loss_dict`` per video). The tests hold the batched
loss equal to it, term by term and in its gradients; ``benchmarks/train_throughput.py`` times it
as the AAVS recipe's loss.
"""
from __future__ import annotations

import torch

from ssp.engine.criterion import mask_targets
from ssp.engine.losses import _slice, network_targets, point_seed
from ssp.model.ssp import SSPModel, SSPOutput


def avs_loss(model: SSPModel, out: SSPOutput, labels: torch.Tensor, binary: bool) -> dict[str, torch.Tensor]:
    """Weighted Mask2Former loss terms for the given frames (all with ground truth), through the
    Hugging Face loss."""
    m2f = model.module.m2f if hasattr(model, "module") else model.m2f
    masks, classes = mask_targets(labels, binary)
    aux = [{"masks_queries_logits": m, "class_queries_logits": c}
           for m, c in zip(out.mask_logits[:-1], out.class_logits[:-1])]
    terms = m2f.get_loss_dict(out.mask_logits[-1], out.class_logits[-1], masks, classes, aux)
    return {"class": sum(v for k, v in terms.items() if "cross_entropy" in k),
            "mask": sum(v for k, v in terms.items() if "loss_mask" in k),
            "dice": sum(v for k, v in terms.items() if "dice" in k)}


def reference_avs_losses(model, out: SSPOutput, batch: dict, *, binary: bool, seed: int | None = None,
                         step: int = 0) -> torch.Tensor:
    """Mean over videos of L_AVS through the Hugging Face loss, one video at a time, as the AAVS
    code computes it. ``ssp.engine.losses.video_losses`` gives the same value in one batch."""
    totals = []
    for v in range(int(batch["video_index"].max()) + 1):
        idx = torch.nonzero((batch["video_index"] == v) & batch["has_mask"]).squeeze(1)
        if idx.numel() == 0:
            continue
        dev = out.mask_logits[-1].device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(point_seed(seed, step, batch["video_ids"][v]))
            size = (model.module if hasattr(model, "module") else model).size
            labels = network_targets(batch["labels"][idx], size)
            totals.append(sum(avs_loss(model, _slice(out, idx), labels, binary).values()))
    return sum(totals) / len(totals)
