"""The AAVS baseline on transformers' Mask2Former (Swin backbone).

Two additions to the stock forward, as AAVS makes them:

* Audio-prompted queries. VGGish (one 128-d vector per frame's second) -> MLP (128-512-256) ->
  a; for every frame, query content += cosine(query position embedding, a) * a, i.e. the
  einsum ``qbn, nbc -> qbc`` over N queries and the T frames of a video (the frames are the batch).
* The "stepping stone" mask (stage 2): the binary sounding mask (ground truth in training, the
  stage-1 prediction at test) is interpolated to the pixel decoder's last hidden state and added
  to it; in the masked-attention decoder, keys are tagged with a learned embedding by the mask's
  value: silent (<= 0.4), sounding (>= 0.6) or uncertain (between), where SSP's 0.5 falls.
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
        return Mask2FormerForUniversalSegmentation(cfg)
    folder = check_model_folder(source, "model.mask2former")
    return load_complete(Mask2FormerForUniversalSegmentation, folder, "model.mask2former",
                         ignore_mismatched_sizes=True, **overrides)


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

    def __init__(self, hidden: int):
        super().__init__()
        self.silent = nn.Parameter(torch.zeros(hidden))
        self.sounding = nn.Parameter(torch.zeros(hidden))
        self.uncertain = nn.Parameter(torch.zeros(hidden))

    def forward(self, stone: torch.Tensor, size) -> torch.Tensor:
        """stone [N, H, W] in [0, 1] -> [h*w, N, C] tags at the feature map's size."""
        s = F.interpolate(stone.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
        s = s.flatten(2).squeeze(1).transpose(0, 1).unsqueeze(-1)                       # [hw, N, 1]
        silent, sounding = (s <= SILENT).float(), (s >= SOUNDING).float()
        return silent * self.silent + sounding * self.sounding + (1 - silent - sounding) * self.uncertain


def transformer_forward(module, multi_scale: list[torch.Tensor], mask_features: torch.Tensor,
                        audio: torch.Tensor | None, stone_tags: list[torch.Tensor] | None):
    """Mask2Former's transformer module with audio-prompted queries and stepping-stone tags.

    Same computation as ``Mask2FormerTransformerModule.forward`` when both are None.
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
    return module.decoder(inputs_embeds=query_feat, multi_stage_positional_embeddings=pos,
                          pixel_embeddings=mask_features, encoder_hidden_states=feats,
                          query_position_embeddings=query_pos, feature_size_list=sizes,
                          output_hidden_states=False, output_attentions=False, return_dict=True)
