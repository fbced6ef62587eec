"""The baseline computes what AAVS's code (GeWu-Lab/Stepping-Stones) computes: its training data,
schedule, matcher, adapters, stochastic depth, initialization, post-processing and F-score. Each
test names the AAVS file the rule comes from (docs/method.md, "AAVS's code, rule by rule")."""
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run_config

from ssp.datasets.manifest import read_manifest
from ssp.engine.build import build_model, make_dataset, select, to_device
from ssp.engine.data import collate
from ssp.engine.loop import lr_schedule, train_step
from ssp.engine.losses import video_losses
from ssp.layout import RunLayout
from ssp.model import adapters
from ssp.variants import VARIANTS

OLD_MASK2FORMER = Path(__file__).parents[1] / "data" / "transformers-4.44" / "mask2former"


def _with(cfg, section: str, **values):
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})


def _video(cfg, subset: str, split: str, variant="baseline"):
    rows = select(read_manifest(RunLayout.of(cfg).manifest), cfg, split)
    rows = rows[rows["subset"] == subset].reset_index(drop=True)
    ds, _ = make_dataset(cfg, rows, VARIANTS[variant], binary=True)
    return ds


# ----------------------------------------------------------------------------- data and schedule

def test_s4_training_video_is_its_first_frame_with_each_second_of_audio(tiny_run):
    """avs/dataset.py: ``_idx = 0`` for the v1s train split: frame 0 five times, each with its own
    second of audio, all five supervised by frame 0's mask."""
    cfg = tiny_run_config(tiny_run)

    def stored(ds, i=0):
        return ds.stores["frames"].read(ds.rows.at[i, "video_id"])["frames"]

    ds = _video(cfg, "v1s", "train", "premask")
    moving = next(i for i in range(len(ds)) if not np.array_equal(stored(ds, i)[1], stored(ds, i)[0]))
    item = ds[moving]
    assert all(np.array_equal(f, stored(ds, moving)[0]) for f in item["frames"])
    assert item["has_mask"].all() and all(np.array_equal(m, item["labels"][0]) for m in item["labels"])
    assert all(np.array_equal(m, item["flow_mask"][0]) for m in item["flow_mask"])
    assert len({row.tobytes() for row in item["vggish"]}) == len(item["vggish"])   # each its own second
    every = _video(_with(cfg, "train", s4_train_frames="all"), "v1s", "train")     # the option keeps ours
    assert np.array_equal(every[moving]["frames"], stored(every, moving)) and not every[moving]["has_mask"][1:].any()
    for other in (_video(cfg, "v1s", "val"), _video(cfg, "v1m", "train")):        # S4 val, MS3: every frame
        assert np.array_equal(other[0]["frames"], stored(other))


def test_ms3_video_with_empty_masks_moves_no_weight(tiny_run):
    """avs/utils/utility.py get_loss: a v1m video whose masks are all empty has a zero loss with no
    gradient, so the optimizer step changes nothing."""
    cfg = tiny_run_config(tiny_run)
    ds = _video(cfg, "v1m", "train")
    batch = to_device(collate([ds[0]]), "cpu")
    torch.manual_seed(0)
    model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    t = cfg.train
    autocast = dict(device_type="cpu", enabled=False)
    train_step(model, model, opt, batch, autocast, t, binary=True, step=0)   # AdamW holds moments now
    silent = dict(batch, labels=torch.zeros_like(batch["labels"]))
    out = model(silent["frames"], silent["vggish"])
    loss, terms = video_losses(model, out, silent, binary=True, postmask_weight=10, use_postmask=False)
    assert terms == {} and loss.item() == 0
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, model, opt, silent, autocast, t, binary=True, step=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    s4 = dict(silent, subsets=["v1s"])                                           # only MS3 videos
    assert video_losses(model, model(s4["frames"], s4["vggish"]), s4, binary=True, postmask_weight=10,
                        use_postmask=False)[1] != {}


def test_learning_rate_decays_once_and_is_kept(tmp_path):
    """avss/train.py: AdamW at 1e-3, restarted at 1e-4 at epochs // 3 (20 of 60) and kept to 60."""
    t = _with(tiny_run_config(tmp_path), "train", lr=1e-3, lr_decay_epoch=20, lr_decay=0.1, epochs=60).train
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = lr_schedule(opt, t)
    rates = []
    for _ in range(60):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[19] == pytest.approx(1e-3) and rates[20] == pytest.approx(1e-4) and rates[59] == pytest.approx(1e-4)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)   # phase 2's fresh optimizer
    lr_schedule(opt2, t, start_epoch=45)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-4)


# ----------------------------------------------------------------------------- the network

def test_matcher_class_cost_is_aavs_one(tmp_path):
    """AAVS's Mask2FormerLoss builds its matcher with cost_class=1.0 (class_weight 2.0 weighs the
    class loss only); transformers 5 would use 2.0."""
    from ssp.engine.criterion import VideoBatchLoss

    model = build_model(tiny_run_config(tmp_path), VARIANTS["baseline"], binary=True, tune="full")
    assert model.m2f.criterion.matcher.cost_class == 1.0
    assert VideoBatchLoss(model.m2f).cost == (1.0, 5.0, 5.0)
    assert model.m2f.weight_dict["loss_cross_entropy"] == 2.0


def test_matcher_class_cost_changes_the_matching():
    """A query with the better mask and one with the better class: cost 1.0 matches the first,
    2.0 (transformers 5's) the second."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    from ssp.model.mask2former import as_aavs

    torch.manual_seed(0)
    m2f = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(num_labels=2, num_queries=2, train_num_points=4096,
                                                                backbone_config={"model_type": "swin", "embed_dim": 8,
                                                                                 "depths": [1, 1, 1, 1],
                                                                                 "num_heads": [1, 1, 1, 1]}))
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    good = torch.where(target[0] > 0, 4.0, -4.0)
    masks = torch.stack([good, good * 0.7])[None]                      # q0: the better mask
    logits = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]])         # q1: more sure of class 1
    matched = {}
    for cost in (1.0, 2.0):
        as_aavs(m2f, {"matcher_class_cost": cost, "swin_drop_path": "ramp"})
        [(queries, _)] = m2f.criterion.matcher(masks, logits, [target], [torch.tensor([1])])
        matched[cost] = int(queries[0])
    assert matched == {1.0: 0, 2.0: 1}


def test_semantic_adapters_follow_the_kept_projections(tmp_path):
    """avss/transformers modeling_mask2former.py: output_proj, then avs_adapt (AVSS); avs/transformers
    comments the projection out (AVS). The kept projection stays frozen in both phases."""
    cfg = tiny_run_config(tmp_path)
    plain = build_model(cfg, VARIANTS["baseline"], binary=False, stepping_stone=True, tune="full")
    semantic = build_model(cfg, VARIANTS["baseline"], binary=False, stepping_stone=True, tune="adapters")
    attn = [m for m in semantic.m2f.modules() if isinstance(m, adapters.AvsAdapt)]
    assert attn and all(a.proj is not None for a in attn)
    pretrained = dict(plain.m2f.named_parameters())
    kept = {n: p for n, p in semantic.m2f.named_parameters() if ".proj." in n}
    assert len(kept) == 2 * len(attn)                                    # weight and bias of each
    for name, p in kept.items():   # the same weights as the model without adapters
        assert torch.equal(p, pretrained[name.replace(".proj.", ".")])
    x = torch.randn(3, attn[0].avs_adapt[0].in_features)
    with torch.no_grad():
        assert torch.allclose(attn[0](x), attn[0].avs_adapt(attn[0].proj(x)))
    for phase in (1, 2):
        adapters.set_phase(semantic, phase=phase, binary=False)
        assert not any(p.requires_grad for p in kept.values())
    binary = build_model(cfg, VARIANTS["baseline"], binary=True, tune="adapters")
    assert all(a.proj is None for a in binary.m2f.modules() if isinstance(a, adapters.AvsAdapt))


def test_swin_blocks_drop_at_the_configured_rate(tmp_path):
    """AAVS's SwinLayer takes config.drop_path_rate (0.3) for every block; transformers 5 ramps it."""
    from transformers.models.swin.modeling_swin import SwinLayer

    cfg = tiny_run_config(tmp_path)
    cfg = _with(cfg, "model", raw={**cfg.model.raw, "backbone": {**cfg.model.raw["backbone"], "drop_path_rate": 0.3}})
    model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full")
    rates = [getattr(m.drop_path, "drop_prob", 0.0) for m in model.m2f.modules() if isinstance(m, SwinLayer)]
    assert len(rates) == 4 and rates == [0.3] * 4
    ramp = build_model(_with(cfg, "model", swin_drop_path="ramp"), VARIANTS["baseline"], binary=True, tune="full")
    rates = [getattr(m.drop_path, "drop_prob", 0.0) for m in ramp.m2f.modules() if isinstance(m, SwinLayer)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)


def test_what_is_not_pretrained_is_initialized_as_aavs_does(tmp_path, tiny_run):
    """AAVS's from_pretrained runs Mask2Former's _init_weights on what its checkpoint lacks: the
    pixel-decoder and Swin adapters N(0, 0.02), the decoder adapters Xavier-uniform, zero biases,
    the stone embeddings N(0, 0.02); the resized class head keeps PyTorch's default."""
    cfg = tiny_run_config(tmp_path)
    model = build_model(cfg, VARIANTS["baseline"], binary=False, stepping_stone=True, tune="adapters")
    deformable = [m.avs_adapt for n, m in model.m2f.named_modules()
                  if isinstance(m, adapters.AvsAdapt) and "pixel_level_module" in n]
    decoder = [m.avs_adapt for n, m in model.m2f.named_modules()
               if isinstance(m, adapters.AvsAdapt) and "transformer_module" in n]
    assert deformable and decoder
    for block in deformable + decoder:
        assert all(torch.equal(lin.bias, torch.zeros_like(lin.bias)) for lin in block if hasattr(lin, "bias"))
    w = torch.cat([lin.weight.detach().flatten() for b in deformable for lin in b if hasattr(lin, "weight")])
    assert 0.012 < float(w.std()) < 0.03
    for b in decoder:
        for lin in (x for x in b if hasattr(x, "weight")):
            bound = math.sqrt(6 / (lin.in_features + lin.out_features))
            w = lin.weight.detach()
            assert float(w.abs().max()) <= bound and float(w.std()) > bound / 4
    adapters.enter_phase2(model, seed=3, binary=False)
    swin = [lin for a in adapters.swin_adapters(model) for lin in a if hasattr(lin, "weight")]
    assert 0.012 < float(torch.cat([lin.weight.detach().flatten() for lin in swin]).std()) < 0.03
    assert all(float(lin.bias.abs().max()) == 0 for lin in swin)
    stone = model.stone
    assert all(0 < float(p.abs().max()) < 0.2 for p in (stone.silent, stone.sounding, stone.uncertain))
    # the class head resized from the checkpoint's 151 outputs: PyTorch's default, not N(0, 0.02)
    loaded = _with(tiny_run_config(tiny_run), "model", mask2former=str(OLD_MASK2FORMER))
    head = build_model(loaded, VARIANTS["baseline"], binary=True, tune="full").m2f.class_predictor
    assert head.out_features == 3 and float(head.bias.abs().max()) > 0
    assert float(head.weight.abs().max()) <= 1 / math.sqrt(head.in_features)


def test_avss_stone_is_the_first_decoder_layers_attention_mask(tmp_path):
    """avss/transformers modeling_mask2former.py (1876-1881): the first masked-attention layer
    attends where the stepping stone is >= 0.5, for every head and query; later layers use their
    predicted masks."""
    from ssp.model.mask2former import stone_attention_mask

    torch.manual_seed(0)
    cfg = _with(tiny_run_config(tmp_path), "model", size=128)                 # a 4 x 4 first feature level
    model = build_model(cfg, VARIANTS["baseline"], binary=False, stepping_stone=True, tune="full").eval()
    decoder = model.m2f.model.transformer_module.decoder
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_attention_mask"].clone()),
                                             with_kwargs=True) for layer in decoder.layers]
    frames, audio = torch.rand(2, 3, 48, 48), torch.randn(2, 128)
    stone = torch.zeros(2, 48, 48)
    stone[:, :24, :24] = 1                                                      # one quadrant sounds
    with torch.no_grad():
        model(frames, audio, stone=stone)
    for h in hooks:
        h.remove()
    heads, queries = decoder.mask_predictor.num_heads, cfg.model.num_queries_semantic
    side = int(math.isqrt(seen[0].shape[-1]))
    expected = stone_attention_mask(stone, (side, side), heads, queries)
    assert torch.equal(seen[0].bool(), expected)
    assert side == 4 and seen[0].shape == (2 * heads, queries, side * side)
    assert not seen[0].bool()[:, :, 0].any() and seen[0].bool()[:, :, -1].all()   # top-left open, bottom-right shut
    assert not decoder.mask_predictor._forward_hooks          # later layers: their predicted masks


# ----------------------------------------------------------------------------- predictions and scoring

def test_class_scores_follow_aavs_post_processing_order():
    """AAVS's post_process_semantic_segmentation: mask logits upsampled to 384, sigmoid, times the
    class probabilities (no-object dropped), then resized to 224; written out here step by step."""
    from ssp.model.ssp import class_scores, sounding_share

    torch.manual_seed(0)
    cls, msk = torch.randn(3, 4, 3), torch.randn(3, 4, 8, 8) * 3              # 2 classes + no-object
    got = class_scores(cls, msk, 32, 20)
    up = torch.nn.functional.interpolate(msk, size=(32, 32), mode="bilinear", align_corners=False).sigmoid()
    probs = cls.softmax(-1)[..., :-1]
    expected = torch.stack([sum(probs[n, q, c] * up[n, q] for q in range(4)) for n in range(3) for c in range(2)])
    expected = torch.nn.functional.interpolate(expected.view(3, 2, 32, 32), size=(20, 20), mode="bilinear",
                                               align_corners=False)
    assert torch.allclose(got, expected, atol=1e-6)
    combined_first = torch.einsum("nqc,nqhw->nchw", probs, msk.sigmoid())    # the order it replaces
    late = torch.nn.functional.interpolate(combined_first, size=(20, 20), mode="bilinear", align_corners=False)
    assert not torch.allclose(got, late, atol=1e-3)
    assert torch.equal(sounding_share(got) > 0.5, got.argmax(1) == 1)         # AAVS's mIoU: the argmax


def test_aavs_fscore_is_scored_on_sigmoid_of_2_s1_minus_s0(tmp_path, semantic_root):
    """avs/utils/utility.py Eval_Fmeasure thresholds sigmoid(2 s1 - s0) of the two class scores;
    metrics.json names the protocol, and the AVSBench protocol scores the sounding share."""
    import json

    import h5py
    from references.metrics import reference_fscore

    from ssp.cli import main
    from ssp.io.media import read_video_masks

    row_dir = semantic_root / "v1m" / "vidB_1" / "labels_rgb"
    truth = np.stack([read_video_masks([str(row_dir / f"{t}.png")], "rgb", 224, 71, binary=True)[0][0]
                      for t in range(5)]) > 0                               # AAVS's binary ground truth
    rng = np.random.default_rng(0)
    scores = rng.random((5, 2, 224, 224)).astype(np.float16)
    scores[:, 1] += truth.astype(np.float16) * 0.5
    share = scores[:, 1].astype(np.float32) / (scores[:, 0] + scores[:, 1]).astype(np.float32)
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        g = h5.create_group("vidB_1")
        g.create_dataset("scores", data=share)
        g.create_dataset("class_scores", data=scores)
    results = {}
    for protocol in ("aavs", "avsbench"):
        out = tmp_path / f"{protocol}.json"
        assert main(["evaluate", "--fscore", protocol, "--task", "ms3", "--root", str(semantic_root),
                     "--predictions", str(pred), "--split", "val", "--out", str(out)]) == 0
        results[protocol] = json.loads(out.read_text())
    s = scores.astype(np.float32)
    aavs_map = 1 / (1 + np.exp(-(2 * s[:, 1] - s[:, 0])))                      # the formula, written out
    has = truth.reshape(5, -1).any(1)
    assert results["aavs"]["fscore"] == pytest.approx(reference_fscore(aavs_map[has], truth[has]), abs=1e-6)
    assert results["avsbench"]["fscore"] == pytest.approx(reference_fscore(share[has], truth[has]), abs=1e-6)
    assert results["aavs"]["fscore"] != pytest.approx(results["avsbench"]["fscore"], abs=1e-3)
    assert results["aavs"]["fscore_protocol"] == "aavs" and "sigmoid(2 s_sounding" in results["aavs"]["protocols"]["fscore"]
    assert results["aavs"]["miou"] == results["avsbench"]["miou"]
    with h5py.File(pred, "a") as h5:
        del h5["vidB_1"]["class_scores"]
    assert main(["evaluate", "--task", "ms3", "--root", str(semantic_root), "--predictions", str(pred),
                 "--split", "val", "--out", str(tmp_path / "x.json")]) == 1               # says what to do


def test_network_sees_one_resize_from_the_source(tiny_run):
    """AAVS's image processor resizes the source frame straight to 384 (PIL bilinear): the frames
    shard holds that copy (``pixels``) and the network reads it without resizing again."""
    from PIL import Image

    from ssp.io.media import load_frame_files

    cfg = tiny_run_config(tiny_run)
    ds = _video(cfg, "v1m", "val")
    item = ds[0]
    row = read_manifest(RunLayout.of(cfg).manifest).set_index("video_id").loc[ds.rows.at[0, "video_id"]]
    source = load_frame_files(row.frame_paths)
    size = cfg.model.size
    expected = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in source])
    assert item["pixels"].shape == (len(source), size, size, 3) and np.array_equal(item["pixels"], expected)
    assert item["frames"].shape[1] == cfg.preprocess.image_size                 # flow, CLIP, figures
    model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full")
    batch = to_device(collate([item]), "cpu")
    x = model.encode_input(batch["frames"], None, batch["pixels"])
    assert torch.allclose(x * model.std + model.mean, torch.as_tensor(expected).permute(0, 3, 1, 2).float() / 255,
                          atol=1e-6)
    stored = _video(_with(cfg, "preprocess", input_frames="stored"), "v1m", "val")[0]   # the option keeps ours
    assert "pixels" not in stored


def test_loss_targets_are_the_224_masks_at_the_input_size_nearest():
    """AAVS's image processor resizes its 224 masks to 384 with PIL NEAREST for the loss."""
    from PIL import Image

    from ssp.engine.losses import network_targets

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 224, 224)).astype(np.uint8)
    got = network_targets(torch.as_tensor(labels), 384).numpy()
    expected = np.stack([np.asarray(Image.fromarray(m).resize((384, 384), Image.NEAREST)) for m in labels])
    assert np.array_equal(got, expected)


# ----------------------------------------------------------------------------- AVSS's two stages

def test_avss_stage1_trains_as_aavs_avs_script(tmp_path, monkeypatch):
    """configs/avss.yaml: the binary stage-1 model takes AAVS's AVS script's schedule (``avs/train.py``
    86-97, ``avs/config.py`` 27: 60 epochs, the restart at epochs // 2 = 30, clipping to 0.01,
    shuffled), stage 2 its AVSS script's (``avss/train.py`` 89, 100: restart at 20, no clipping;
    ``avss/dataset.py`` 91-94: unshuffled)."""
    import yaml
    from conftest import ROOT

    import ssp.engine.loop
    from ssp.config import Config, merge
    from ssp.engine.jobs import run_training

    avss = yaml.safe_load((ROOT / "configs" / "avss.yaml").read_text())
    raw = merge(tiny_run_config(tmp_path).raw, {"train": avss["train"]})
    cfg = Config.from_dict(raw)
    seen = {}
    monkeypatch.setattr(ssp.engine.loop, "train", lambda cfg, manifest, variant, out, **kw: seen.setdefault(variant, cfg.train))
    monkeypatch.setattr(ssp.engine.jobs, "read_manifest", lambda path: None)
    run_training(cfg, "stage1", tmp_path / "s1")
    run_training(cfg, "full", tmp_path / "full")
    one, two = seen["baseline"], seen["full"]
    assert (one.epochs, one.lr_decay_epoch, one.grad_clip, one.shuffle) == (60, 30, 0.01, True)
    assert (two.epochs, two.lr_decay_epoch, two.grad_clip, two.shuffle) == (60, 20, None, False)


def test_unshuffled_order_is_v1s_v1m_v2_each_in_the_datasets_order():
    """``train.shuffle: false``: AAVS's ConcatDataset([v1s, v1m, v2]) read in order (``avss/dataset.py`` 91-94)."""
    import pandas as pd

    from ssp.engine.loop import fixed_order

    rows = pd.DataFrame({"video_id": list("abcdef"), "subset": ["v2", "v1m", "v1s", "v2", "v1s", "v1m"]})
    assert [rows["video_id"][i] for i in fixed_order(rows)] == ["c", "e", "b", "f", "a", "d"]



def test_ground_truth_at_224_as_aavs_reads_it(tmp_path):
    """A source-size colour mask (320 x 180, AVSBench-semantic's labels_rgb) against AAVS's readers
    written out: binary (``avs/dataset.py`` 180-184) cv2.imread, cv2.resize to 224 (bilinear),
    BGR to grey, > 0; semantic (``avss/dataset.py`` 43, 46-62) PIL RGB, resized by PIL's nearest,
    then the palette matched colour by colour (argmax; an unknown colour is background)."""
    import cv2
    from PIL import Image

    from ssp.io.media import read_mask
    from ssp.io.palette import colorize, palette

    labels = np.zeros((180, 320), np.uint8)
    labels[20:97, 33:150] = 5
    labels[60:170, 140:301] = 12
    labels[150:179, 3:40] = 70
    rgb = colorize(labels)
    rgb[0, 0] = (1, 2, 3)                                                         # a colour of no class
    path = tmp_path / "0.png"
    Image.fromarray(rgb).save(path)

    bgr = cv2.resize(cv2.imread(str(path)), (224, 224))
    binary = (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) > 0).astype(np.uint8)
    small = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.NEAREST))
    colours = palette()[:71]
    semantic = np.stack([np.all(np.equal(small, c), axis=-1) for c in colours], -1).astype(np.float32).argmax(-1)

    assert np.array_equal(read_mask(str(path), "rgb", 224, 71, binary=True), binary)
    assert np.array_equal(read_mask(str(path), "rgb", 224, 71), semantic.astype(np.uint8))
    # the other readings differ on this mask: not AAVS's by accident
    nearest = cv2.resize(labels, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(nearest, semantic) and not np.array_equal(nearest > 0, binary.astype(bool))
