"""SSP: the AAVS baseline plus the pre-mask (Eq. 2), the text prompts with VTA (Algorithm 1,
Eq. 3) and the post-mask loss (Eq. 5), each behind a switch.

Table 2's rows are named presets of the three switches (``ssp.variants.VARIANTS``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ssp.model.mask2former import AudioPrompt, StoneEmbeddings, transformer_forward
from ssp.variants import Variant

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SSPOutput:
    class_logits: list[torch.Tensor]   # per decoder layer: [N, Q, C + 1]
    mask_logits: list[torch.Tensor]    # per decoder layer: [N, Q, h, w]

    @property
    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.class_logits[-1], self.mask_logits[-1]


class SSPModel(nn.Module):
    """Keyword-only parts: the Mask2Former, the VTA module (or None), the switches."""

    def __init__(self, *, mask2former, variant: Variant, vta: nn.Module | None = None,
                 stepping_stone: bool = False, size: int):
        super().__init__()
        if (variant.text != "none") != (vta is not None):
            raise ValueError(f"variant text={variant.text!r} and the VTA module disagree")
        self.m2f, self.variant, self.vta, self.size = mask2former, variant, vta, size
        hidden = mask2former.config.hidden_dim
        self.audio = AudioPrompt(hidden)
        self.stone = StoneEmbeddings(hidden) if stepping_stone else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_labels(self) -> int:
        return self.m2f.config.num_labels

    def encode_input(self, frames: torch.Tensor, premask: torch.Tensor | None) -> torch.Tensor:
        """frames [N, 3, S, S] in [0, 1] (times M_Pre when given) -> normalized model input."""
        if premask is not None:
            frames = frames * premask.unsqueeze(1)
        x = F.interpolate(frames, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, *, premask: torch.Tensor | None = None,
                stone: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> SSPOutput:
        """frames [N, 3, S, S] in [0, 1]; audio [N, 128]; premask/stone [N, S, S]; text [N, L]."""
        if premask is not None and not self.variant.premask:
            raise ValueError("a pre-mask was given to a variant without pre-mask")
        pix = self.m2f.model.pixel_level_module(pixel_values=self.encode_input(frames, premask))
        mask_features = pix.decoder_last_hidden_state                          # [N, C, h, w]
        tags = None
        if self.stone is not None:
            if stone is None:
                raise ValueError("this model needs a stepping-stone mask")
            mask_features = mask_features + F.interpolate(stone.unsqueeze(1).float(), size=mask_features.shape[-2:],
                                                          mode="bilinear", align_corners=False)
            tags = [self.stone(stone, f.shape[-2:]) for f in pix.decoder_hidden_states]
        if self.vta is not None:
            mask_features = self.vta(mask_features, frames, text_ids, text_mask)  # Eq. 3
        dec = transformer_forward(self.m2f.model.transformer_module, pix.decoder_hidden_states, mask_features,
                                  self.audio(audio), tags)
        classes = [self.m2f.class_predictor(h.transpose(0, 1)) for h in dec.intermediate_hidden_states]
        return SSPOutput(classes, list(dec.masks_queries_logits))


def semantic_probs(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic inference: [N, Q, C+1], [N, Q, h, w] -> [N, C, h, w] class scores."""
    return torch.einsum("nqc,nqhw->nchw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())


def foreground_prob(class_logits: torch.Tensor, mask_logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """[N, h, w] foreground probability. Binary (AAVS's classes background 0 and sounding 1): the
    sounding class's share of the two semantic scores, above 0.5 exactly where the semantic
    argmax picks it (AAVS scores its mIoU by that argmax). Semantic: every class but background 0."""
    probs = semantic_probs(class_logits, mask_logits)
    fg = probs[:, 1] / (probs[:, 0] + probs[:, 1]).clamp_min(1e-6) if binary else probs[:, 1:].sum(1)
    return fg.clamp(0, 1)
