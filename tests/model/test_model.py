"""The SSP model: shapes, Eq. 2, switches, loading from folders, overfitting one batch."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, tiny_run_config
from references.hf_loss import avs_loss, reference_avs_losses

from ssp.datasets.manifest import read_manifest
from ssp.engine.criterion import mask_targets
from ssp.engine.data import VideoDataset, collate
from ssp.engine.loop import build_model, model_inputs, to_device
from ssp.engine.losses import _slice, point_seed, video_losses
from ssp.io.captions import read_captions
from ssp.layout import RunLayout
from ssp.model.premask import postmask_label, premask, premask_flow_only, premask_for_test
from ssp.variants import VARIANTS


def _batch(tiny_run, variant, n=2, split="train"):
    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    rows = m[(m["split"] == split) & m["subset"].isin(["v1s", "v1m"])].reset_index(drop=True)
    caps = {}
    for p in RunLayout.of(cfg).stage_dir("captions").glob("*.jsonl"):
        caps.update(read_captions(p))
    from ssp.model.vta import load_tokenizer

    ds = VideoDataset(rows, cfg.run_dir, need_flow=variant.premask or variant.postmask,
                      need_text=variant.text != "none", captions=caps, tokenizer=load_tokenizer(TINY_MODEL["tokenizer"]),
                      max_text_len=8)
    return cfg, to_device(collate([ds[i] for i in range(n)]), "cpu")


def test_eq2_on_hand_made_masks():
    mo = torch.tensor([[1, 1], [0, 0]])
    gt = torch.tensor([[1, 0], [1, 0]])
    assert premask(mo, gt).tolist() == [[1.0, 0.5], [0.5, 0.0]]
    assert premask_flow_only(mo).tolist() == [[0.75, 0.75], [0.25, 0.25]]
    stage1 = torch.tensor([[0.9, 0.2], [0.7, 0.1]])
    assert premask_for_test(mo, stage1, "stage1").tolist() == [[1.0, 0.5], [0.5, 0.0]]
    assert premask_for_test(mo, None, "flow").tolist() == [[0.75, 0.75], [0.25, 0.25]]
    assert premask_for_test(mo, None, "none").tolist() == [[1.0, 1.0], [1.0, 1.0]]
    # section 4.1, literally: M_GT excluded at test = empty, so 0.5 on M_O and 0 elsewhere
    assert premask_for_test(mo, None, "empty").tolist() == [[0.5, 0.5], [0.0, 0.0]]
    with pytest.raises(ValueError, match="stage-1"):
        premask_for_test(mo, None, "stage1")
    assert postmask_label(mo, gt).tolist() == [[1.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("binary,stone", [(True, False), (False, True)])
def test_output_shapes(tiny_run, binary, stone):
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    model = build_model(cfg, VARIANTS["full"], binary=binary, stepping_stone=stone)
    kw = model_inputs(model, batch, training=True, premask_test="flow")
    out = model(batch["frames"], batch["vggish"], **kw)
    n = batch["frames"].shape[0]
    q = 4 if binary else 6
    classes = 2 if binary else 71   # binary: AAVS's background and sounding
    assert out.final[0].shape == (n, q, classes + 1)
    assert out.final[1].shape == (n, q, 32 // 4, 32 // 4)
    assert len(out.class_logits) == 2  # decoder_layers predictions (HF counts the initial one as a layer)
    targets, labels = mask_targets(batch["labels"], binary)
    assert all(t.shape[1:] == (48, 48) for t in targets)


def test_targets_binary_and_semantic():
    lab = torch.zeros(2, 4, 4, dtype=torch.long)
    lab[0, :2, :2] = 17
    lab[0, 2:, 2:] = 29
    masks, classes = mask_targets(lab, binary=True)   # AAVS's classes: background 0, sounding 1
    assert masks[0].shape == (2, 4, 4) and classes[0].tolist() == [0, 1]
    assert masks[0][0].sum() == 8 and masks[0][1].sum() == 8 and masks[0].sum(0).eq(1).all()
    assert masks[1].shape == (1, 4, 4) and classes[1].tolist() == [0] and masks[1].all()   # all background
    masks, classes = mask_targets(lab, binary=False)
    assert classes[0].tolist() == [0, 17, 29] and classes[1].tolist() == [0]


def test_binary_foreground_logit_agrees_with_the_semantic_argmax():
    """AAVS scores binary masks by Mask2Former's semantic argmax over background and sounding; the
    foreground probability the post-mask loss reads is above 0.5 (its logit above 0) exactly there."""
    from ssp.model.ssp import foreground_logit, semantic_probs

    torch.manual_seed(0)
    cls, msk = torch.randn(3, 5, 3) * 3, torch.randn(3, 5, 16, 16) * 3
    z = foreground_logit(cls, msk)
    assert z.shape == (3, 16, 16) and z.dtype == torch.float32
    assert torch.equal(z > 0, semantic_probs(cls, msk).argmax(1) == 1)
    assert 0.05 < (z > 0).float().mean() < 0.95


@pytest.mark.parametrize("binary", [True, False])
def test_postmask_loss_equals_the_cross_entropy_on_probabilities(binary):
    """L'_mask from the logit (legal under CUDA autocast) equals PyTorch's BCE on the clamped
    probability (tests/references/postmask.py), values and gradients, the clamps included: against
    the reference in float64 at every scale of the logits, up to where the probability reaches
    1e-6 and 1 - 1e-6, and against the reference in float32 at moderate logits within that
    reference's own rounding of 1 - p (the logit does not round it)."""
    from references.postmask import postmask_frames as reference

    from ssp.engine.losses import postmask_frames
    from ssp.model.ssp import SSPOutput, foreground_logit

    torch.manual_seed(0)
    classes = 3 if binary else 6
    for scale in (1.0, 4.0, 30.0):
        cls = (torch.randn(4, 5, classes) * scale).requires_grad_()
        msk = (torch.randn(4, 5, 8, 8) * scale).requires_grad_()
        labels = torch.randint(0, classes - 1, (4, 32, 32))
        flow = (torch.rand(4, 32, 32) > 0.5).to(torch.uint8)
        ours = postmask_frames(SSPOutput([cls], [msk]), labels, flow)
        assert ours.dtype == torch.float32
        exact = reference(cls.double(), msk.double(), labels, flow)
        torch.testing.assert_close(ours, exact.float(), rtol=1e-4, atol=1e-5)
        if scale < 30:   # at 30 pixels sit on the clamps, where the gradient jumps to 0
            for a, b in zip(torch.autograd.grad(ours.sum(), (cls, msk)), torch.autograd.grad(exact.sum(), (cls, msk))):
                torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-6)
        if scale == 1:   # float32's 1 - (1 - 1e-6) is 1.0013e-6: the reference's own rounding at the clamp
            torch.testing.assert_close(ours, reference(cls, msk, labels, flow), rtol=2e-3, atol=1e-5)
    bound = math.log((1 - 1e-6) / 1e-6)   # the last scale reaches the clamps
    assert (foreground_logit(cls, msk).abs() >= bound - 1e-3).any()


def _encoder_input(model, batch, kw):
    seen = {}

    def hook(mod, args, kwargs):
        seen["x"] = kwargs["pixel_values"].clone()

    handle = model.m2f.model.pixel_level_module.register_forward_pre_hook(hook, with_kwargs=True)
    model(batch["frames"], batch["vggish"], **kw)
    handle.remove()
    return seen["x"]


def test_premask_switch_changes_only_the_encoder_input(tiny_run):
    cfg, batch = _batch(tiny_run, VARIANTS["premask"])
    base = build_model(cfg, VARIANTS["baseline"], binary=True)
    pre = build_model(cfg, VARIANTS["premask"], binary=True)
    assert set(base.state_dict()) == set(pre.state_dict())                  # no extra parameters
    x0 = _encoder_input(base, batch, model_inputs(base, batch, training=True, premask_test="flow"))
    torch.testing.assert_close(x0, base.encode_input(batch["frames"], None))  # frames unchanged
    kw = model_inputs(pre, batch, training=True, premask_test="flow")
    x1 = _encoder_input(pre, batch, kw)
    m = torch.nn.functional.interpolate(kw["premask"][:, None], size=x1.shape[-2:], mode="nearest-exact")
    torch.testing.assert_close(x1, pre.encode_input(batch["frames"], None) * m)   # M_Pre times V^T
    assert not torch.allclose(x0, x1)
    with pytest.raises(ValueError, match="without pre-mask"):
        base(batch["frames"], batch["vggish"], premask=kw["premask"])


def test_text_off_reads_no_caption(tiny_run):
    class Exploding(dict):
        def get(self, *a):
            raise AssertionError("a caption was read")

    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    ds = VideoDataset(m.iloc[:2], cfg.run_dir, need_flow=False, need_text=False, captions=Exploding())
    item = ds[0]
    assert "text_ids" not in item and "flow_mask" not in item


def test_text_modes_and_postmask_term(tiny_run):
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    att = build_model(cfg, VARIANTS["text_att"], binary=True)
    vta = build_model(cfg, VARIANTS["text_vta"], binary=True)
    assert hasattr(att.vta, "cross") and not hasattr(vta.vta, "cross")
    assert len(vta.vta.aligns(batch["frames"], batch["text_ids"], batch["text_mask"])) == 2   # Align_1, Align_2
    assert len(att.vta.aligns(batch["frames"], batch["text_ids"], batch["text_mask"])) == 2
    full = build_model(cfg, VARIANTS["full"], binary=True)
    out = full(batch["frames"], batch["vggish"], **model_inputs(full, batch, training=True, premask_test="flow"))
    torch.manual_seed(0)  # the matcher samples random points
    _, with_post = video_losses(full, out, batch, binary=True, postmask_weight=10, use_postmask=True)
    torch.manual_seed(0)
    _, without = video_losses(full, out, batch, binary=True, postmask_weight=10, use_postmask=False)
    assert "postmask" in with_post and "postmask" not in without
    assert with_post["class"] == pytest.approx(without["class"])


def fit_one_batch(model, batch, steps: int = 60, lr: float = 3e-3) -> list[float]:
    """The full variant's losses over ``steps`` AdamW steps on one batch (trainable parameters only)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    kw = model_inputs(model, batch, training=True, premask_test="flow")
    losses = []
    for _ in range(steps):
        loss, _ = video_losses(model, model(batch["frames"], batch["vggish"], **kw), batch, binary=True,
                               postmask_weight=10, use_postmask=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_overfit_one_batch(tiny_run):
    torch.manual_seed(0)
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    losses = fit_one_batch(build_model(cfg, VARIANTS["full"], binary=True), batch)
    assert np.isfinite(losses).all()
    assert min(losses[-5:]) < 0.35 * losses[0], losses[::10]


def test_non_finite_loss_names_the_term(tiny_run, monkeypatch):
    import ssp.engine.losses

    cfg, batch = _batch(tiny_run, VARIANTS["premask_postmask"])
    model = build_model(cfg, VARIANTS["premask_postmask"], binary=True)
    out = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test="flow"))
    monkeypatch.setattr(ssp.engine.losses, "postmask_frames", lambda part, labels, *a: torch.full((len(labels),), float("inf")))
    with pytest.raises(FloatingPointError, match="loss term 'postmask' is inf for video"):
        video_losses(model, out, batch, binary=True, postmask_weight=10, use_postmask=True)


def test_models_load_from_saved_folders(tmp_path, tiny_run):
    """Mask2Former, CLIP and the text encoder saved from small configs load back as a user's weights."""
    import dataclasses

    cfg = tiny_run_config(tiny_run)
    model = build_model(cfg, VARIANTS["full"], binary=True)
    model.m2f.save_pretrained(tmp_path / "m2f")
    model.vta.clip.save_pretrained(tmp_path / "clip")
    model.vta.text.save_pretrained(tmp_path / "text")
    m = dataclasses.replace(cfg.model, mask2former=str(tmp_path / "m2f"), clip=str(tmp_path / "clip"),
                            text_encoder=str(tmp_path / "text"))
    m = dataclasses.replace(m, raw=cfg.model.raw)
    loaded = build_model(dataclasses.replace(cfg, model=m), VARIANTS["full"], binary=True)
    for part in ("m2f", "vta.clip", "vta.text"):
        a = dict(model.get_submodule(part).state_dict())
        b = dict(loaded.get_submodule(part).state_dict())
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part


OLD_MASK2FORMER = Path(__file__).parents[1] / "data" / "transformers-4.44" / "mask2former"


def test_mask2former_saved_by_transformers_4_loads_whole(tmp_path, tiny_run, caplog):
    """The published Mask2Former checkpoints were saved by transformers 4.x: they name Swin's
    weights the old way and lack the final layer norm that transformers 5's Swin backbone holds
    (and never applies to its feature maps). A tiny one saved by 4.44.2 (tests/data/transformers-4.44/
    make.py) loads with every weight it has, and AAVS's adapters train on it."""
    import dataclasses

    from safetensors.torch import load_file, save_file

    from ssp.io.weights import WeightsError

    cfg = tiny_run_config(tiny_run)
    model_cfg = dataclasses.replace(cfg.model, mask2former=str(OLD_MASK2FORMER))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(model_cfg, raw=cfg.model.raw))
    with caplog.at_level("INFO", logger="ssp.io.weights"):
        model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full")
    assert "swin.layernorm.weight" in caplog.text and "transformers declares may be absent" in caplog.text
    loaded = list(model.m2f.state_dict().values())
    saved = load_file(OLD_MASK2FORMER / "model.safetensors")
    remade = ("relative_position_index",   # a buffer transformers 5 rebuilds
              "class_predictor", "criterion.empty_weight", "queries_features", "queries_embedder")  # this task's sizes
    kept = {k: v for k, v in saved.items() if not any(r in k for r in remade)}
    assert len(kept) > 100 and any("encoder.encoder.layers.0.blocks.0.attention.self.query" in k for k in kept)
    for k, v in kept.items():        # under their new names (q_proj, swin.encoder, ...), the same values
        assert any(w.shape == v.shape and torch.equal(w, v) for w in loaded), k
    # AAVS's adapters on it: a training step runs and touches only phase 1's parameters
    torch.manual_seed(0)
    _, batch = _batch(tiny_run, VARIANTS["baseline"])
    model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="adapters")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    out = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test="flow"))
    loss, _ = video_losses(model, out, batch, binary=True, postmask_weight=0, use_postmask=False)
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3).step()
    assert torch.isfinite(loss) and frozen
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    # a checkpoint missing a weight that is used stays an error
    broken = tmp_path / "m2f-missing"
    broken.mkdir()
    (broken / "config.json").write_text((OLD_MASK2FORMER / "config.json").read_text())
    del saved["model.pixel_level_module.encoder.hidden_states_norms.stage1.weight"]
    save_file(saved, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"no weights for 1 parameter.*hidden_states_norms\.stage1\.weight"):
        build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mask2former=str(broken))),
                    VARIANTS["baseline"], binary=True, tune="full")


def test_text_encoder_and_clip_load_from_the_whole_published_models(tmp_path, tiny_run):
    """Users hold whole checkpoints: a BLIP image-text retrieval model (its text encoder is taken)
    and a CLIP model (its vision tower); a folder that lacks some of a model's weights is an error
    naming them, never a model that runs on the random values transformers would put there."""
    from safetensors.torch import load_file, save_file
    from transformers import BlipConfig, BlipForImageTextRetrieval, CLIPConfig, CLIPModel

    from ssp.io.weights import WeightsError
    from ssp.model.vta import build_clip_vision, build_text_encoder

    cfg = tiny_run_config(tiny_run)
    tc, vc = cfg.model.raw["text_config"], cfg.model.raw["clip_config"]
    blip = BlipForImageTextRetrieval(BlipConfig(text_config=tc, vision_config=vc, projection_dim=8)).eval()
    blip.save_pretrained(tmp_path / "blip-itm")
    clip = CLIPModel(CLIPConfig(text_config={k: v for k, v in vc.items() if k not in ("image_size", "patch_size")},
                                vision_config=vc, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path / "clip")
    text = build_text_encoder(str(tmp_path / "blip-itm"), tc)
    assert all(torch.equal(v, blip.text_encoder.state_dict()[k]) for k, v in text.state_dict().items())
    vision = build_clip_vision(str(tmp_path / "clip"), vc)
    assert all(torch.equal(v, clip.vision_model.state_dict()[k]) for k, v in vision.state_dict().items())

    text.save_pretrained(tmp_path / "text")
    weights = tmp_path / "text" / "model.safetensors"
    state = load_file(weights)
    del state["embeddings.word_embeddings.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"'model.text_encoder': .*text has no weights for 1 parameter\(s\) of "
                                           r"BlipTextModel \(e.g. embeddings.word_embeddings.weight\)"):
        build_text_encoder(str(tmp_path / "text"), tc)
    with pytest.raises(WeightsError, match=r"'model.clip': .*blip-itm does not load as CLIPVisionModel"):
        build_clip_vision(str(tmp_path / "blip-itm"), vc)


def test_variant_names_of_the_studies():
    from ssp.variants import parse_variant

    assert parse_variant("full") == ("full", {})
    assert parse_variant("full-pm2.5") == ("full", {"postmask_weight": 2.5})
    assert parse_variant("premask_postmask-q1c") == ("premask_postmask", {"q1_variant": "c"})
    with pytest.raises(ValueError, match="unknown variant 'full-q1e'"):
        parse_variant("full-q1e")


def test_channels_last_step_equals_default_and_compile_wraps(tiny_run):
    """The trainer's memory-format setting changes the layout, not the arithmetic: one step from
    the same weights gives the same loss and gradients; `compile` wraps the forward module."""
    import dataclasses

    from ssp.engine.loop import train_step, training_setup

    cfg, batch = _batch(tiny_run, VARIANTS["premask"])
    losses, grads = [], []
    for cl in (False, True):
        t = dataclasses.replace(cfg.train, channels_last=cl, compile=False)
        torch.manual_seed(0)
        model = build_model(cfg, VARIANTS["premask"], binary=True)
        fwd, opt, ac = training_setup(model, t, torch.device("cpu"))
        b = dict(batch, frames=batch["frames"].contiguous(memory_format=torch.channels_last) if cl
                 else batch["frames"].contiguous())
        loss, _ = train_step(fwd, model, opt, b, ac, t, binary=True, step=0)
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == cl
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    diff = (grads[0] - grads[1]).abs().max() / grads[0].abs().max()
    assert diff < 1e-3, diff
    t = dataclasses.replace(cfg.train, compile=True)
    fwd, _, _ = training_setup(build_model(cfg, VARIANTS["baseline"], binary=True), t, torch.device("cpu"))
    assert type(fwd).__name__ == "OptimizedModule"


@pytest.mark.parametrize("binary", [True, False])
def test_batched_loss_equals_hugging_face_per_video(tiny_run, binary):
    """The loss of all videos and decoder layers at once equals transformers' Mask2Former loss run
    video by video with the same seeds: every term, and the gradients they give."""
    from ssp.engine.criterion import VideoBatchLoss

    cfg, batch = _batch(tiny_run, VARIANTS["baseline"], n=4)
    torch.manual_seed(0)
    model = build_model(cfg, VARIANTS["baseline"], binary=binary)
    out = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test="flow"))
    videos = int(batch["video_index"].max()) + 1
    sel = [torch.nonzero((batch["video_index"] == v) & batch["has_mask"]).squeeze(1) for v in range(videos)]
    seeds = [point_seed(3, 7, batch["video_ids"][v]) for v in range(videos)]
    ref = []
    for v in range(videos):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds[v])
            ref.append(avs_loss(model, _slice(out, sel[v]), batch["labels"][sel[v]], binary))
    allf = torch.cat(sel)
    got = VideoBatchLoss(model.m2f)([c[allf] for c in out.class_logits], [m[allf] for m in out.mask_logits],
                                    batch["labels"][allf], [v for v in range(videos) for _ in sel[v]], seeds, binary)
    assert len(got) == videos
    total, _ = video_losses(model, out, batch, binary=binary, postmask_weight=10, use_postmask=False, seed=3, step=7)

    ref_total = reference_avs_losses(model, out, batch, binary=binary, seed=3, step=7)
    assert total.item() == pytest.approx(ref_total.item(), rel=1e-4)
    for r, g in zip(ref, got):
        for k in ("class", "mask", "dice"):
            assert g[k].item() == pytest.approx(r[k].item(), rel=1e-4, abs=1e-6), k
    params = [p for p in model.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad(sum(sum(r.values()) for r in ref), params, retain_graph=True, allow_unused=True)
    g_got = torch.autograd.grad(sum(sum(r.values()) for r in got), params, allow_unused=True)
    assert [a is None for a in g_ref] == [b is None for b in g_got]
    a = torch.cat([x.flatten() for x in g_ref if x is not None])
    b = torch.cat([x.flatten() for x in g_got if x is not None])
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4


def test_premask_multiplies_the_normalized_image(tmp_path):
    """Section 4.1: M_Pre is multiplied to V^T, the normalized and resized image (section 3): a
    masked pixel becomes the mean colour (0 after normalization), not black; `raw` keeps black."""
    cfg = tiny_run_config(tmp_path)
    model = build_model(cfg, VARIANTS["premask"], binary=True, tune="full")
    frames = torch.rand(2, 3, 16, 16)
    premask = torch.ones(2, 16, 16)
    premask[:, :8] = 0                                                        # the top half masked
    x = model.encode_input(frames, premask)
    plain = model.encode_input(frames, None)
    half = x.shape[-2] // 2
    assert torch.equal(x[..., :half, :], torch.zeros_like(x[..., :half, :]))
    assert torch.allclose(x[..., half:, :], plain[..., half:, :])
    model.premask_image = "raw"
    black = model.encode_input(frames, premask)[..., :half, :]
    assert torch.allclose(black, ((0 - model.mean) / model.std).expand_as(black))


def test_vta_follows_algorithm_1_line_by_line(tiny_run):
    """Line 3: A1 and A2 separately, shared weights (Align_1 does not move when only A2 changes);
    lines 6-7: the first pass reads [Z_A ; Z_V] under the unified mask and cross-attends to Z_V;
    line 8: the second pass reads Z_A and cross-attends to the first pass's output."""
    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    model = build_model(cfg, VARIANTS["text_vta"], binary=True).eval()
    vta = model.vta
    ids, mask = batch["text_ids"], batch["text_mask"]
    half = ids.shape[1] // 2
    calls = []
    layer = vta.text.encoder.layer[0]
    hooks = [vta.text.register_forward_hook(lambda m, a, kw, out: calls.append(("text", kw, out)), with_kwargs=True),
             layer.crossattention.register_forward_pre_hook(
                 lambda m, a, kw: calls.append(("cross", a, kw)), with_kwargs=True)]
    with torch.no_grad():
        a1, a2 = vta.aligns(batch["frames"], ids, mask)
    for h in hooks:
        h.remove()
    texts = [c for c in calls if c[0] == "text"]
    assert len(texts) == 4                                               # two passes for each caption
    first, second = texts[0], texts[1]
    lv = vta.visual_tokens
    la = first[1]["inputs_embeds"].shape[1] - lv
    assert first[1]["attention_mask"].shape[1] == la + lv                # Attmask-Unify
    assert first[1]["encoder_hidden_states"].shape[1] == lv              # cross attention to Z_V
    assert second[1]["inputs_embeds"].shape[1] == la                     # Z_A again
    assert torch.equal(second[1]["encoder_hidden_states"], first[2].last_hidden_state)   # keys: Align of line 7
    assert torch.equal(second[1]["encoder_attention_mask"], first[1]["attention_mask"])
    changed = ids.clone()
    changed[:, half + 1] = (changed[:, half + 1] + 7) % 1000              # another A2 token
    with torch.no_grad():
        b1, b2 = vta.aligns(batch["frames"], changed, mask)
    assert torch.equal(a1, b1) and not torch.allclose(a2, b2)


def test_a_caption_longer_than_max_text_len_is_cut_and_logged(tiny_run, caplog):
    from ssp.model.vta import load_tokenizer

    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    long = {v: {"a1": "a man plays a piano " * 20, "a2": "piano"} for v in m["video_id"]}
    ds = VideoDataset(m.iloc[:1], cfg.run_dir, need_flow=False, need_text=True, captions=long,
                      tokenizer=load_tokenizer(TINY_MODEL["tokenizer"]), max_text_len=8)
    import ssp.io.logs

    ssp.io.logs.warn_once.cache_clear()                                  # said once per video and caption
    with caplog.at_level("WARNING", logger="ssp.engine.data"):
        item = ds[0]
    assert item["text_ids"].shape[1] == 16 and "A1 is longer than model.max_text_len (8 tokens)" in caplog.text
    assert "A2 is longer" not in caplog.text


def test_text_encoder_cross_attention_honours_the_mask_over_its_keys():
    """BLIP's text layers in transformers 5 drop the cross attention's mask; ours pass it on, so a
    masked key (a padded caption position of VTA's first pass) changes nothing."""
    from ssp.model.vta import _text_encoder, build_text_encoder

    def moved_by_masked_keys(text):
        d = text.config.hidden_size
        x, keys = torch.randn(1, 3, d), torch.randn(1, 10, text.config.encoder_hidden_size)
        mask = torch.ones(1, 10, dtype=torch.long)
        mask[0, 3:7] = 0
        other = keys.clone()
        other[0, 3:7] = 100
        with torch.no_grad():
            a, b = (text(inputs_embeds=x.clone(), attention_mask=torch.ones(1, 3, dtype=torch.long),
                         encoder_hidden_states=k, encoder_attention_mask=mask).last_hidden_state for k in (keys, other))
        return float((a - b).abs().max())

    torch.manual_seed(0)
    assert moved_by_masked_keys(build_text_encoder("random", TINY_MODEL["text_config"]).eval()) == 0.0
    assert moved_by_masked_keys(_text_encoder("random", TINY_MODEL["text_config"]).eval()) > 1e-3   # the library's


def test_vta_gives_a_video_the_same_aligns_whatever_shares_its_batch():
    """Captions are cut to the batch's longest (speed), but the visual tokens keep the positions
    they have in the padded sequence: a video's Align does not depend on the other videos."""
    from ssp.model.vta import VTA, build_clip_vision, build_text_encoder

    vta = VTA(mode="vta", clip=build_clip_vision("random", TINY_MODEL["clip_config"]),
              text_encoder=build_text_encoder("random", TINY_MODEL["text_config"]), feature_dim=16).eval()
    frames = torch.rand(2, 3, 32, 32)
    ids = torch.randint(1000, 2000, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[0, :3], mask[1, :7] = 1, 1                              # A1 of 3 and of 7 tokens; A2 of 8 each
    mask[:, 8:] = 1
    with torch.no_grad():
        alone = vta.aligns(frames[:1], ids[:1], mask[:1])
        together = vta.aligns(frames, ids, mask)
    assert all(torch.allclose(a[0], b[0], atol=1e-5) for a, b in zip(alone, together))
