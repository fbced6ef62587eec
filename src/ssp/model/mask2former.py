"""The AAVS baseline on transformers' Mask2Former (Swin backbone).

Two additions to the stock forward, as AAVS makes them:

* Audio-prompted queries. VGGish (one 128-d vector per frame's second) -> MLP (128-512-256) ->
  a; for every frame, query content += cosine(query position embedding, a) * a, i.e. the
  einsum ``qbn, nbc -> qbc`` over N queries and the T frames of a video (the frames are the batch).
* The "stepping stone" mask (stage 2): the binary sounding mask (ground truth in training, the
  stage-1 prediction at test) is interpolated to the pixel decoder's last hidden state and added
  to it; in the masked-attention decoder, keys are tagged with a learned embedding by the mask's
  value: silent (<= 0.4), sounding (>= 0.6) or uncertain (between), where SSP's 0.5 falls; and the
  first decoder layer attends only where the stone is at least 0.5 (``stone_attention_mask``).
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

SILENT, SOUNDING = 0.4, 0.6


def build_mask2former(source: str, num_labels: int, *, num_queries: int, config: dict, seed: int = 0):
    """Mask2Former from a local folder, or built from ``config`` with random weights ('random')."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    from ssp.io.weights import check_model_folder, load_complete

    # id2label with num_labels: the class count of this task, not the checkpoint's (ADE20K's 150)
    names = ["background", "sounding"] if num_labels == 2 else [f"class_{i}" for i in range(num_labels)]
    overrides = dict(num_labels=num_labels, id2label=dict(enumerate(names)), num_queries=num_queries,
                     class_weight=config["class_weight"],
                     mask_weight=config["mask_weight"], dice_weight=config["dice_weight"],
                     no_object_weight=config["no_object_weight"], train_num_points=config["num_points"])
    if source == "random":
        torch.manual_seed(seed)
        bb = config["backbone"]
        swin = SwinConfig(image_size=config["size"], patch_size=4, embed_dim=bb["embed_dim"], depths=bb["depths"],
                          num_heads=bb["num_heads"], window_size=bb["window_size"], drop_path_rate=bb["drop_path_rate"],
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        cfg = Mask2FormerConfig(backbone_config=swin, feature_size=config["hidden_dim"],
                                mask_feature_size=config["hidden_dim"], hidden_dim=config["hidden_dim"],
                                encoder_feedforward_dim=4 * config["hidden_dim"], encoder_layers=config["encoder_layers"],
                                decoder_layers=config["decoder_layers"], num_attention_heads=config["heads"],
                                dim_feedforward=8 * config["hidden_dim"], **overrides)
        log.warning("Mask2Former/Swin has RANDOM weights (seed %d), as the config asks", seed)
        return as_aavs(Mask2FormerForUniversalSegmentation(cfg), config)
    folder = check_model_folder(source, "model.mask2former")
    m2f = load_complete(Mask2FormerForUniversalSegmentation, folder, "model.mask2former",
                        ignore_mismatched_sizes=True, **overrides)
    if checkpoint_labels(folder) != num_labels:
        reset_class_head(m2f, seed)
    return as_aavs(m2f, config)


def checkpoint_labels(folder) -> int | None:
    """The class count a Mask2Former checkpoint was trained for (ADE20K: 150), from its config."""
    import json
    from pathlib import Path

    cfg = json.loads((Path(folder) / "config.json").read_text())
    labels = cfg.get("id2label") or {}
    return len(labels) if labels else cfg.get("num_labels")


@torch.no_grad()
def reset_class_head(m2f, seed: int) -> None:
    """A class head resized from the checkpoint's (ADE20K's 151 outputs to this task's 3 or 72) with
    PyTorch's default initialization, as AAVS's has it: its vendored ``from_pretrained`` marks the
    head loaded (its name is among the checkpoint's keys) before dropping the mismatched weights,
    so Mask2Former's ``_init_weights`` never runs on it (``avs/transformers/modeling_utils.py``
    3732-3734, 3788). Drawn from ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m2f.class_predictor.reset_parameters()


def as_aavs(m2f, config: dict):
    """What AAVS's Mask2Former (transformers 4.35.2 as AAVS vendors it) does differently from
    transformers 5's, made so here:

    * the Hungarian matcher's class cost is ``matcher_class_cost`` (AAVS: 1.0, written in
      ``Mask2FormerLoss.__init__``, ``avs|avss/transformers/models/mask2former/modeling_mask2former.py``
      lines 531-536 / 533-538), not ``class_weight``, which stays the class loss's weight;
    * with ``swin_drop_path: constant``, every Swin block's stochastic depth is the backbone's
      ``drop_path_rate`` (AAVS's ``SwinLayer`` takes ``config.drop_path_rate``: the per-block ramp
      its ``SwinEncoder`` computes never reaches the layers, ``avs|avss/transformers/models/swin/
      modeling_swin.py`` lines 631, 746-761, 809-818); transformers 5 ramps it from 0.
    """
    from transformers.models.swin.modeling_swin import SwinDropPath, SwinLayer

    m2f.criterion.matcher.cost_class = float(config["matcher_class_cost"])
    if config["swin_drop_path"] == "constant":
        rate = float(m2f.config.backbone_config.drop_path_rate)
        for layer in (m for m in m2f.modules() if isinstance(m, SwinLayer)):
            layer.drop_path = SwinDropPath(rate) if rate > 0 else nn.Identity()
    return m2f


class AudioPrompt(nn.Module):
    """VGGish [N, 128] -> [N, hidden]: the AAVS projection."""

    def __init__(self, hidden: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, hidden))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.proj(audio)


def prompt_queries(query_pos: torch.Tensor, query_feat: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """query_feat [Q, N, C] += cosine(query_pos [Q, C], audio [N, C]) * audio, per frame n."""
    sim = F.cosine_similarity(query_pos.unsqueeze(1), audio.unsqueeze(0), dim=-1)   # [Q, N]
    return query_feat + torch.einsum("qn,nc->qnc", sim, audio)


class StoneEmbeddings(nn.Module):
    """Learned silent / sounding / uncertain tags added to the decoder's key position embeddings."""

    def __init__(self, hidden: int, std: float = 0.02):
        """N(0, ``std``) each, as AAVS's ``from_pretrained`` initializes its stone embeddings, which
        its checkpoint lacks (Mask2Former's ``_init_weights``, init_std 0.02; ``avss/transformers/
        models/mask2former/modeling_mask2former.py`` 2079-2081, 2252-2253)."""
        super().__init__()
        self.silent = nn.Parameter(torch.randn(hidden) * std)
        self.sounding = nn.Parameter(torch.randn(hidden) * std)
        self.uncertain = nn.Parameter(torch.randn(hidden) * std)

    def forward(self, stone: torch.Tensor, size) -> torch.Tensor:
        """stone [N, H, W] in [0, 1] -> [h*w, N, C] tags at the feature map's size."""
        s = F.interpolate(stone.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
        s = s.flatten(2).squeeze(1).transpose(0, 1).unsqueeze(-1)                       # [hw, N, 1]
        silent, sounding = (s <= SILENT).float(), (s >= SOUNDING).float()
        return silent * self.silent + sounding * self.sounding + (1 - silent - sounding) * self.uncertain


def stone_attention_mask(stone: torch.Tensor, size, heads: int, queries: int) -> torch.Tensor:
    """The first decoder layer's masked-attention mask from the stepping stone, as AAVS's AVSS
    decoder overrides it (``avss/transformers/models/mask2former/modeling_mask2former.py``
    1876-1881): the stone [N, H, W] resized (bilinear) to the first feature level, every query of
    every head blocked (True) where it is below 0.5 -> [N * heads, Q, h * w], the mask predictor's
    layout. A row blocked everywhere is opened again by the decoder, as in AAVS."""
    s = F.interpolate(stone.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).flatten(2)
    blocked = s < 0.5                                                                # [N, 1, hw]
    return blocked.unsqueeze(1).expand(-1, heads, queries, -1).flatten(0, 1)


def transformer_forward(module, multi_scale: list[torch.Tensor], mask_features: torch.Tensor,
                        audio: torch.Tensor | None, stone_tags: list[torch.Tensor] | None,
                        stone: torch.Tensor | None = None):
    """Mask2Former's transformer module with audio-prompted queries and stepping-stone tags; with
    ``stone``, the first decoder layer attends where the stone is (``stone_attention_mask``).

    Same computation as ``Mask2FormerTransformerModule.forward`` when all three are None.
    """
    feats, pos, sizes = [], [], []
    for i in range(module.num_feature_levels):
        x = multi_scale[i]
        sizes.append(x.shape[-2:])
        p = module.position_embedder(x.shape, x.device, x.dtype, None).flatten(2).permute(2, 0, 1)   # [hw, N, C]
        if stone_tags is not None:
            p = p + stone_tags[i].to(p.dtype)
        pos.append(p)
        feats.append((module.input_projections[i](x).flatten(2) + module.level_embed.weight[i][None, :, None])
                     .permute(2, 0, 1))
    n = feats[0].shape[1]
    query_pos = module.queries_embedder.weight.unsqueeze(1).repeat(1, n, 1)     # [Q, N, C]
    query_feat = module.queries_features.weight.unsqueeze(1).repeat(1, n, 1)
    if audio is not None:
        query_feat = prompt_queries(module.queries_embedder.weight, query_feat, audio)
    hook = None
    if stone is not None:   # the mask predictor's first call gives the first layer's attention mask
        predictor = module.decoder.mask_predictor
        first = stone_attention_mask(stone, sizes[0], predictor.num_heads, query_feat.shape[0])

        def override(_module, _inputs, output):
            hook.remove()
            return output[0], first.to(output[1].device)

        hook = predictor.register_forward_hook(override)
    try:
        return module.decoder(inputs_embeds=query_feat, multi_stage_positional_embeddings=pos,
                              pixel_embeddings=mask_features, encoder_hidden_states=feats,
                              query_position_embeddings=query_pos, feature_size_list=sizes,
                              output_hidden_states=False, output_attentions=False, return_dict=True)
    finally:
        if hook is not None:
            hook.remove()
