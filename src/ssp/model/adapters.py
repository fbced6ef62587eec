"""AAVS's adapters: the parameter-efficient training of its scripts (``train.tune: adapters``).

The AAVS training scripts (GeWu-Lab/Stepping-Stones, ``avs/train.py``, ``avss/train.py``) keep the
pretrained Mask2Former frozen and train small adapters inside it, in two phases:

* ``avs_adapt``: a bottleneck d -> d/4 -> ReLU -> d at the output projection of every deformable
  self-attention of the pixel decoder and of every self-attention of the transformer decoder,
  trained from the first epoch. For binary tasks it *replaces* the projection (AAVS's ``avs``
  code); for AVSS it follows the pretrained projection, which stays frozen (its ``avss`` code).
* ``swin_adapt``: in every Swin layer, after the attention's output projection and after the MLP's
  second linear layer, a residual bottleneck: y + W2 ReLU(W1 y). Phase 1: zero weights (the
  identity) and frozen. Phase 2 (from the first learning-rate decay, ``train.lr_decay_epoch``:
  AAVS switches at ``epochs // 2`` for AVS and ``epochs // 3`` for AVSS, which are 15 of 30 and
  20 of 60, the paper's first decays): the model restarts from the best validation epoch so far,
  these adapters start as AAVS's fresh model has them (Mask2Former's ``_init_weights``: N(0, 0.02),
  zero biases; AAVS builds a fresh model and loads its phase-1 weights without them) and are
  trained too.

Initialization, as AAVS's ``from_pretrained`` gives what its checkpoint lacks (``init_linears``):
the avs adapters of the pixel decoder N(0, 0.02), those of the transformer decoder
Xavier-uniform, zero biases.

Trained in both phases: the avs adapters, the query position embeddings, the query content
embeddings (binary tasks only: AAVS's AVSS script leaves them out), the class head, the audio
projection, the stepping-stone embeddings and VTA's own layers. Frozen: the rest of the Swin
backbone, pixel decoder and transformer decoder, CLIP and the text encoder.

One difference in order: AAVS adds the Swin adapter after the layer's hidden dropout, here it
follows the projection, before that dropout; Swin's released configs set it to 0, where both agree.
"""
from __future__ import annotations

import torch
from torch import nn

PHASE2_NOTE = "AAVS phase 2: the Swin adapters are trained too"


def bottleneck(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim // 4), nn.ReLU(), nn.Linear(dim // 4, dim))


class SwinAdapted(nn.Module):
    """A pretrained linear layer followed by AAVS's residual adapter: y = linear(x); y + swin_adapt(y)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.swin_adapt = bottleneck(linear.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + self.swin_adapt(y)


class AvsAdapt(nn.Module):
    """AAVS's bottleneck in place of an attention's output projection (``proj`` None: AAVS's AVS
    code), or after it (``proj``, the pretrained projection, kept frozen: AAVS's AVSS code)."""

    def __init__(self, dim: int, proj: nn.Linear | None = None):
        super().__init__()
        self.proj = proj
        self.avs_adapt = bottleneck(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avs_adapt(x if self.proj is None else self.proj(x))


def install(m2f, *, series: bool = False) -> None:
    """Insert the adapters into a built or loaded ``Mask2FormerForUniversalSegmentation``, in place;
    the Swin adapters start at zero (phase 1's identity). ``series``: the avs adapters follow the
    pretrained output projections (AAVS's AVSS code: ``output = self.output_proj(output)`` then
    ``self.avs_adapt(output)``, ``avss/transformers/models/mask2former/modeling_mask2former.py``
    982-984 and 1556-1558) instead of replacing them (its AVS code comments the projection out,
    ``avs/transformers/...`` 992-994 and 1566-1568)."""
    from transformers.models.mask2former import modeling_mask2former as mm
    from transformers.models.swin.modeling_swin import SwinLayer

    swin = [m for m in m2f.modules() if isinstance(m, SwinLayer)]
    deformable = [m for m in m2f.modules() if isinstance(m, mm.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention)]
    decoder = [m for m in m2f.modules() if isinstance(m, mm.Mask2FormerAttention)]
    if not (swin and deformable and decoder) or has_adapters(m2f):
        raise ValueError("adapters fit a Mask2Former with a Swin backbone, once (found "
                         f"{len(swin)} Swin layers, {len(deformable)} deformable and {len(decoder)} decoder attentions)")
    for layer in swin:
        layer.attention.o_proj = SwinAdapted(layer.attention.o_proj)
        layer.mlp.fc2 = SwinAdapted(layer.mlp.fc2)
    std, gain = m2f.config.init_std, m2f.config.init_xavier_std
    for attn in deformable:
        attn.output_proj = AvsAdapt(attn.output_proj.out_features, attn.output_proj if series else None)
        init_linears(attn.output_proj.avs_adapt, lambda w: nn.init.normal_(w, std=std))
    for attn in decoder:
        attn.out_proj = AvsAdapt(attn.out_proj.out_features, attn.out_proj if series else None)
        init_linears(attn.out_proj.avs_adapt, lambda w: nn.init.xavier_uniform_(w, gain=gain))
    zero_swin_adapters(m2f)


@torch.no_grad()
def init_linears(module: nn.Module, weight_init) -> None:
    """AAVS's initialization of an adapter it adds: Hugging Face's ``_init_weights`` of the model
    it sits in, which AAVS's ``from_pretrained`` runs on every module the checkpoint lacks (the
    vendored ``avs/transformers/modeling_utils.py`` 3732-3734; ``modeling_mask2former.py``
    2206-2216): the pixel-level module's linear layers N(0, init_std = 0.02) (the Swin and
    pixel-decoder adapters), the decoder layers' Xavier-uniform (gain ``init_xavier_std`` = 1);
    biases zero."""
    for lin in module.modules():
        if isinstance(lin, nn.Linear):
            weight_init(lin.weight)
            nn.init.zeros_(lin.bias)


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, SwinAdapted) for m in model.modules())


def swin_adapters(model: nn.Module) -> list[nn.Module]:
    return [m.swin_adapt for m in model.modules() if isinstance(m, SwinAdapted)]


@torch.no_grad()
def zero_swin_adapters(model: nn.Module) -> None:
    for adapter in swin_adapters(model):
        for p in adapter.parameters():
            p.zero_()


@torch.no_grad()
def reset_swin_adapters(model: nn.Module, seed: int, std: float = 0.02) -> None:
    """Every Swin adapter as AAVS's phase 2 starts it: its fresh ``from_pretrained`` model gives the
    adapters, absent from its checkpoint, Mask2Former's ``_init_weights`` (N(0, init_std = 0.02),
    zero biases; ``init_linears``). Drawn from ``seed`` (the same on every rank and after a
    resume); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for adapter in swin_adapters(model):
            init_linears(adapter, lambda w: nn.init.normal_(w, std=std))


def trained_modules(model, *, phase: int, binary: bool) -> list[nn.Module]:
    """The parts of an ``SSPModel`` with adapters that ``phase`` (1 or 2) trains."""
    tm = model.m2f.model.transformer_module
    parts = [m.avs_adapt for m in model.m2f.modules() if isinstance(m, AvsAdapt)]   # not a kept projection
    parts += [tm.queries_embedder, model.m2f.class_predictor, model.audio]
    if binary:
        parts.append(tm.queries_features)
    if model.stone is not None:
        parts.append(model.stone)
    if model.vta is not None:
        parts += [child for name, child in model.vta.named_children() if name not in ("clip", "text")]
    if phase == 2:
        parts += swin_adapters(model)
    return parts


def enter_phase2(model, *, seed: int, binary: bool) -> str:
    """Phase 2's start (the weights to restart from already loaded): the Swin adapters initialized
    as AAVS's fresh model has them, from ``seed``, and trained; returns ``set_phase``'s line."""
    reset_swin_adapters(model, seed=seed, std=model.m2f.config.init_std)
    return set_phase(model, phase=2, binary=binary)


def set_phase(model, *, phase: int, binary: bool) -> str:
    """Freeze every parameter but those ``phase`` trains; returns a line saying how many those are."""
    for p in model.parameters():
        p.requires_grad_(False)
    for part in trained_modules(model, phase=phase, binary=binary):
        for p in part.parameters():
            p.requires_grad_(True)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"adapters, phase {phase}: {trained:,} of {total:,} parameters trained ({100 * trained / max(total, 1):.1f}%)"
            + (f"; {PHASE2_NOTE}" if phase == 2 else ""))
