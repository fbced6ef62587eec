"""SSP: the AAVS baseline plus the pre-mask (Eq. 2), the text prompts with VTA (Algorithm 1,
Eq. 3) and the post-mask loss (Eq. 5), each behind a switch.

Table 2's rows are named presets of the three switches (``ssp.variants.VARIANTS``).
"""
from __future__ import annotations

import math
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
                 stepping_stone: bool = False, size: int, premask_image: str = "normalized"):
        super().__init__()
        if (variant.text != "none") != (vta is not None):
            raise ValueError(f"variant text={variant.text!r} and the VTA module disagree")
        self.m2f, self.variant, self.vta, self.size = mask2former, variant, vta, size
        hidden = mask2former.config.hidden_dim
        self.audio = AudioPrompt(hidden)
        self.stone = StoneEmbeddings(hidden) if stepping_stone else None
        self.premask_image = premask_image
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_labels(self) -> int:
        return self.m2f.config.num_labels

    def encode_input(self, frames: torch.Tensor, premask: torch.Tensor | None,
                     pixels: torch.Tensor | None = None) -> torch.Tensor:
        """The normalized model input V^T, times M_Pre when given (Eq. 2; section 4.1: M_Pre is
        multiplied to V^T, which section 3 defines as the normalized and resized image, so a masked
        pixel becomes the mean colour; ``premask_image: raw`` multiplies the [0, 1] image instead,
        which blacks it out). The image: ``pixels`` [N, 3, M, M], the frames at the model's size M
        resized once from the source (as AAVS feeds its network), or the frames [N, 3, S, S]
        upsampled (bilinear). M_Pre, made at the frames' size S, is resized to M (nearest)."""
        x = pixels if pixels is not None else F.interpolate(frames, size=(self.size, self.size), mode="bilinear",
                                                           align_corners=False)
        m = None
        if premask is not None:
            m = F.interpolate(premask.unsqueeze(1).float(), size=x.shape[-2:], mode="nearest-exact")
        if m is not None and self.premask_image == "raw":
            x = x * m
        x = (x - self.mean) / self.std
        return x * m if m is not None and self.premask_image == "normalized" else x

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, *, premask: torch.Tensor | None = None,
                stone: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, pixels: torch.Tensor | None = None) -> SSPOutput:
        """frames [N, 3, S, S] in [0, 1]; audio [N, 128]; premask/stone [N, S, S]; text [N, L];
        pixels [N, 3, M, M] in [0, 1]: the frames at the model's size M (``encode_input``)."""
        if premask is not None and not self.variant.premask:
            raise ValueError("a pre-mask was given to a variant without pre-mask")
        pix = self.m2f.model.pixel_level_module(pixel_values=self.encode_input(frames, premask, pixels))
        mask_features = pix.decoder_last_hidden_state                          # [N, C, h, w]
        if self.vta is not None:
            mask_features = self.vta(mask_features, frames, text_ids, text_mask)  # Eq. 3
        tags = None
        if self.stone is not None:   # after Eq. 3, whose Normalize would subtract it (one value per pixel)
            if stone is None:
                raise ValueError("this model needs a stepping-stone mask")
            mask_features = mask_features + F.interpolate(stone.unsqueeze(1).float(), size=mask_features.shape[-2:],
                                                          mode="bilinear", align_corners=False)
            tags = [self.stone(stone, f.shape[-2:]) for f in pix.decoder_hidden_states]
        dec = transformer_forward(self.m2f.model.transformer_module, pix.decoder_hidden_states, mask_features,
                                  self.audio(audio), tags, stone if self.stone is not None else None)
        classes = [self.m2f.class_predictor(h.transpose(0, 1)) for h in dec.intermediate_hidden_states]
        return SSPOutput(classes, list(dec.masks_queries_logits))


def semantic_probs(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic inference: [N, Q, C+1], [N, Q, h, w] -> [N, C, h, w] class scores."""
    return torch.einsum("nqc,nqhw->nchw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())


def foreground_logit(class_logits: torch.Tensor, mask_logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[N, Q, C+1], [N, Q, h, w] -> [N, h, w] the logit of the foreground probability p, in float32,
    clamped to [logit(eps), logit(1 - eps)]. p is the foreground's share of Mask2Former's semantic
    scores (``semantic_probs``): s_fg / (s_0 + s_fg), with s_0 background's score and s_fg the sum
    of every other class's (binary: AAVS's sounding class; the share is above 0.5 exactly where
    the semantic argmax picks it), the denominator floored at ``eps``. (The sum of the class scores
    alone is no probability: Q queries each add up to one, so at initialization it exceeds 1
    everywhere, where a clamp would leave the post-mask loss no gradient.)

    Computed in log space from the logits (log-softmax, log-sigmoid, logsumexp over the queries:
    no matrix product), so that under bf16 autocast every op runs in float32 and the post-mask
    loss can take ``binary_cross_entropy_with_logits``, which CUDA autocast accepts (it refuses
    ``binary_cross_entropy`` on probabilities)."""
    log_cls = class_logits.float().log_softmax(-1)                                  # [N, Q, C+1]
    log_msk = F.logsigmoid(mask_logits.float())                                     # [N, Q, h, w]
    per_query = torch.stack([log_cls[..., 0], torch.logsumexp(log_cls[..., 1:-1], dim=-1)], dim=2)   # [N, Q, 2]
    log_s = torch.logsumexp(per_query[..., None, None] + log_msk[:, :, None], dim=1)  # [N, 2, h, w]: s_0, s_fg
    z = log_s[:, 1] - log_s[:, 0]                                                   # logit(s_fg / (s_0 + s_fg))
    floored = torch.logaddexp(log_s[:, 0], log_s[:, 1]) < math.log(eps)             # there p = s_fg / eps
    z = torch.where(floored, _logit_of_log(log_s[:, 1] - math.log(eps), eps), z)
    bound = math.log1p(-eps) - math.log(eps)
    return z.clamp(-bound, bound)


def _logit_of_log(log_p: torch.Tensor, eps: float) -> torch.Tensor:
    """logit(p) from log p, p clamped to [eps, 1 - eps]: log p - log(1 - p)."""
    log_p = log_p.clamp(math.log(eps), math.log1p(-eps))
    return log_p - torch.log(-torch.expm1(log_p))


def class_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: int, out_size: int) -> torch.Tensor:
    """[N, Q, C+1], [N, Q, h, w] -> [N, C, out_size, out_size] class scores, in AAVS's order (its
    image processor's ``post_process_semantic_segmentation``, ``avs/transformers/models/
    mask2former/image_processing_mask2former.py`` 1022-1048): the mask logits upsampled (bilinear)
    to the model's input ``size`` (384), their sigmoid, combined with the class probabilities, then
    resized (bilinear) to ``out_size`` (224, the ground truth's)."""
    msk = F.interpolate(mask_logits.float(), size=(size, size), mode="bilinear", align_corners=False)
    probs = semantic_probs(class_logits.float(), msk)
    return F.interpolate(probs, size=(out_size, out_size), mode="bilinear", align_corners=False)


def sounding_share(scores: torch.Tensor) -> torch.Tensor:
    """Binary [N, 2, H, W] class scores -> [N, H, W] the sounding class's share, in [0, 1]: above
    0.5 exactly where AAVS's argmax picks sounding (its mIoU; a tie goes to background)."""
    return (scores[:, 1] / (scores[:, 0] + scores[:, 1]).clamp_min(1e-6)).clamp(0, 1)


def aavs_fscore_map(scores: torch.Tensor) -> torch.Tensor:
    """Binary [N, 2, H, W] class scores -> [N, H, W] the map AAVS's F-score thresholds:
    sigmoid(2 s_sounding - s_background) (``Eval_Fmeasure``, ``avs/utils/utility.py`` 68-69)."""
    return torch.sigmoid(2 * scores[:, 1] - scores[:, 0])


def fscore_map(scores: torch.Tensor, protocol: str) -> torch.Tensor:
    """Binary [N, 2, H, W] class scores -> the [N, H, W] map an F-score protocol thresholds:
    ``aavs``, sigmoid(2 s_sounding - s_background); ``avsbench``, the sounding share."""
    return aavs_fscore_map(scores) if protocol == "aavs" else sounding_share(scores)
