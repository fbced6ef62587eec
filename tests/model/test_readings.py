"""The readings of the paper and of AAVS's code, each written out here and held against the code:
the audio-prompted queries, Eq. 3, Algorithm 1's line 9, the att module, the stepping stone's
addition and tags, L'_mask's value, and Table 2's presets. Each test fails when its reading is
broken."""
import math

import pytest
import torch
from test_model import _batch
from torch.nn import functional as F

from ssp.engine.loop import build_model, model_inputs
from ssp.variants import TABLE2, VARIANTS, Variant


def test_audio_prompted_queries_follow_aavs_formula(tiny_run):
    """AAVS (``avs|avss/transformers/models/mask2former/modeling_mask2former.py`` 2112-2117 /
    2128-2134): sim = cos(query position embedding q, audio a_t); the query *content* of frame t
    is its feature plus sim[q, t] * a_t; the position embeddings stay the learned ones."""
    cfg, batch = _batch(tiny_run, VARIANTS["baseline"])
    model = build_model(cfg, VARIANTS["baseline"], binary=True).eval()
    module = model.m2f.model.transformer_module
    seen = {}
    handle = module.decoder.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        model(batch["frames"], batch["vggish"])
    handle.remove()
    pos, feat = module.queries_embedder.weight, module.queries_features.weight          # [Q, C]
    audio = model.audio(batch["vggish"])                                                  # [N, C]
    expected = torch.empty(len(pos), len(audio), pos.shape[1])
    for q in range(len(pos)):
        for t in range(len(audio)):
            sim = torch.dot(pos[q], audio[t]) / (pos[q].norm() * audio[t].norm())
            expected[q, t] = feat[q] + sim * audio[t]
    torch.testing.assert_close(seen["inputs_embeds"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["query_position_embeddings"], pos.unsqueeze(1).expand(-1, len(audio), -1))


def _features_into_the_decoder(model, batch, kw) -> torch.Tensor:
    """The pixel features the masked-attention decoder reads (``pixel_embeddings``)."""
    seen = {}
    decoder = model.m2f.model.transformer_module.decoder
    handle = decoder.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    with torch.no_grad():
        model(batch["frames"], batch["vggish"], **kw)
    handle.remove()
    return seen["pixel_embeddings"]


def test_eq3_and_the_stone_after_it(tiny_run):
    """Eq. 3: F' = LayerNorm over the channels of (F + Align_1 + Align_2) at every pixel, F the
    pixel decoder's last features; then AAVS's stone, bilinear to F's size, added at every channel."""
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    model = build_model(cfg, VARIANTS["text_vta"], binary=False, stepping_stone=True).eval()
    stone = torch.rand(batch["labels"].shape)
    kw = dict(model_inputs(model, batch, training=True, premask_test="flow"), stone=stone)
    with torch.no_grad():
        f = model.m2f.model.pixel_level_module(
            pixel_values=model.encode_input(batch["frames"], None, batch.get("pixels"))).decoder_last_hidden_state
        a1, a2 = model.vta.aligns(batch["frames"], kw["text_ids"], kw["text_mask"])
    norm = model.vta.norm
    added = (f + a1[..., None, None] + a2[..., None, None]).permute(0, 2, 3, 1)          # [N, h, w, C]
    mean, var = added.mean(-1, keepdim=True), added.var(-1, unbiased=False, keepdim=True)
    eq3 = ((added - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias).permute(0, 3, 1, 2)
    stone_map = F.interpolate(stone[:, None], size=f.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(_features_into_the_decoder(model, batch, kw), eq3 + stone_map, rtol=1e-5, atol=1e-5)


def test_stone_tags_silent_sounding_uncertain():
    """AAVS's tags by the stone's value (``avss/.../modeling_mask2former.py`` 2098-2112): silent at or
    below 0.4, sounding at or above 0.6, uncertain between; added to the key position embeddings."""
    from ssp.model.mask2former import StoneEmbeddings

    emb = StoneEmbeddings(4)
    values = torch.tensor([0.0, 0.4, 0.41, 0.5, 0.59, 0.6, 1.0])
    tags = emb(values.view(1, 1, -1), (1, len(values)))[:, 0]                           # [hw, C]
    expected = [emb.silent, emb.silent, emb.uncertain, emb.uncertain, emb.uncertain, emb.sounding, emb.sounding]
    for got, want in zip(tags, expected):
        assert torch.equal(got, want)


def _tokens(vta, batch):
    ids, mask = batch["text_ids"], batch["text_mask"]
    half = ids.shape[1] // 2
    z_v = vta.mlp_v(vta.clip(pixel_values=vta.clip_pixels(batch["frames"])).last_hidden_state)   # line 4
    return z_v, ids[:, :half], mask[:, :half]


def test_algorithm1_line9_mean_over_the_captions_tokens_then_mlp_then_layernorm(tiny_run):
    """Line 9: Align = LayerNorm(MLP(mean of the second pass's output over A's tokens, padding out))."""
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    vta = build_model(cfg, VARIANTS["text_vta"], binary=True).eval().vta
    z_v, ids, mask = _tokens(vta, batch)
    seen = []
    handle = vta.text.register_forward_hook(lambda m, a, out: seen.append(out.last_hidden_state))
    with torch.no_grad():
        align = vta.align_one(z_v, ids, mask)
    handle.remove()
    second, m = seen[1], mask[:, :seen[1].shape[1]].float()                               # [N, La, D]
    pooled = (second * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    mlp, layer_norm = vta.align
    torch.testing.assert_close(align, layer_norm(mlp(pooled)), rtol=1e-5, atol=1e-6)


def test_att_is_a_residual_cross_attention_from_the_captions_tokens_to_z_v(tiny_run):
    """att (Fig. 6): h = Z_A + MultiHead(Z_A, Z_V, Z_V); Align = LayerNorm(MLP(mean of h over A's tokens))."""
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    vta = build_model(cfg, VARIANTS["text_att"], binary=True).eval().vta
    z_v, ids, mask = _tokens(vta, batch)
    with torch.no_grad():
        align = vta.align_one(z_v, ids, mask)
        keep = int(mask.sum(1).max())
        z_a = vta.mlp_t(vta.text.embeddings.word_embeddings(ids[:, :keep]))
        h = z_a + vta.cross(z_a, z_v, z_v)[0]
        m = mask[:, :keep].float()
        expected = vta.align((h * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    torch.testing.assert_close(align, expected, rtol=1e-5, atol=1e-6)


def test_postmask_loss_value_on_hand_made_masks():
    """L'_mask on 4 x 4 masks with 2 x 2 logits: target M_O ∩ M_GT area-resized to the logits (the
    fraction of each 2 x 2 block in it), foreground probability p = 0.8 everywhere (one query, class
    logits 0 and logit(0.8)), BCE averaged over the pixels, weighted by lambda'_mask; read from the
    last decoder layer only."""
    from ssp.engine.losses import postmask_frames, video_losses
    from ssp.model.ssp import SSPOutput

    mo = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    gt = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    target = torch.tensor([[3 / 4, 0.0], [0.0, 1.0]])                                    # M_Post's block fractions
    p = 0.8
    hand = -(target * math.log(p) + (1 - target) * math.log(1 - p)).mean()
    last = SSPOutput([torch.tensor([[[0.0, math.log(p / (1 - p)), -3.0]]])], [torch.zeros(1, 1, 2, 2)])
    torch.testing.assert_close(postmask_frames(last, gt[None], mo[None]), hand.view(1).float(), rtol=1e-6, atol=1e-6)
    # an earlier decoder layer's logits do not count; the weight multiplies the term
    out = SSPOutput([torch.randn(1, 1, 3)] + last.class_logits, [torch.randn(1, 1, 2, 2)] + last.mask_logits)
    batch = {"video_index": torch.tensor([0]), "has_mask": torch.tensor([True]), "labels": gt[None],
             "flow_mask": mo[None], "video_ids": ["v"], "subsets": ["v1s"]}
    model = _LossOnly()
    _, terms = video_losses(model, out, batch, binary=True, postmask_weight=10.0, use_postmask=True, seed=0)
    assert terms["postmask"] == pytest.approx(10 * float(hand), rel=1e-5)


class _LossOnly(torch.nn.Module):
    """What ``video_losses`` reads of a model for these hand-made logits: a Mask2Former criterion of
    2 classes and the input size (4)."""

    def __init__(self):
        super().__init__()
        from conftest import TINY_MODEL

        from ssp.model.mask2former import build_mask2former

        settings = dict(TINY_MODEL, size=32, swin_drop_path="ramp", class_weight=2.0, matcher_class_cost=1.0,
                        mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1, num_points=16)
        self.m2f = build_mask2former("random", 2, num_queries=1, config=settings)
        self.size = 4


def test_table2_presets_are_the_papers_rows():
    """Table 2's rows, as the paper names them, and their switches; `full_att` is Fig. 6's "att"
    beside the full model. Renaming or editing a preset fails here."""
    rows = {"AAVS [29]": ("baseline", False, False, "none"),
            "w. Pre-mask": ("premask", True, False, "none"),
            "w. Pre-mask w. Post-mask": ("premask_postmask", True, True, "none"),
            "w. Textual prompts w/o. VTA": ("text_att", False, False, "att"),
            "w. Textual prompts w. VTA": ("text_vta", False, False, "vta"),
            "w/o. Post-mask": ("full_no_postmask", True, False, "vta"),
            "Full model": ("full", True, True, "vta")}
    assert TABLE2 == tuple(name for name, *_ in rows.values())
    for name, premask, postmask, text in rows.values():
        assert VARIANTS[name] == Variant(premask=premask, postmask=postmask, text=text), name
    assert VARIANTS["full_att"] == Variant(premask=True, postmask=True, text="att")
    assert set(VARIANTS) == set(TABLE2) | {"full_att"}
