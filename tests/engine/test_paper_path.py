"""The paper's path as a GPU runs it, run on the CPU.

Every variant of ``ssp.variants`` (the seven Table 2 rows and ``full_att``) in every setting (S4,
MS3, and AVSS with its binary stage 1 and its semantic stage 2) trains and predicts with the paper
configs' own settings: ``configs/paper.yaml`` and the setting's file, merged as Snakemake merges
them, on tiny models in the published formats (a Mask2Former saved by transformers 4.44, whole CLIP
and BLIP models) and a few SynthAVS videos in the AVSBench-semantic layout. Each training is the
paper's phase 1, one step, validation, AAVS's phase 2, one step, validation; then the model
predicts the test split with the stage-1 model's masks as the pre-mask's stand-in and the stones.
Overridden for size and speed only: the network's widths, the data, one DataLoader process, the
flow backend (DIS; Perceiver IO's path is the paper-run workflow test's) and captions from a file.

Checks:
* every aten op the path dispatches is put to PyTorch's AutocastCUDA kernel for it (``AutocastAudit``),
  which can be called on a CPU: an op CUDA autocast refuses (``binary_cross_entropy``) fails here
  as it would fail the first step on a GPU with ``train.precision`` bf16 or auto;
* every variant's training steps under CPU bf16 autocast too (``train.precision: bf16``), where a
  dtype fault surfaces as on a GPU.
``torch.compile`` is not on this path: the paper configs leave ``train.compile`` off.
"""
from __future__ import annotations

import collections
import json
import logging
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, save_published_models
from torch.utils._python_dispatch import TorchDispatchMode

from ssp.config import Config, merge
from ssp.datasets.manifest import build_manifest, shards_of, write_manifest
from ssp.layout import RunLayout
from ssp.variants import VARIANTS

AUTOCAST_CUDA = torch._C.DispatchKey.AutocastCUDA
SETTINGS = ("s4", "ms3", "avss")


class AutocastAudit(TorchDispatchMode):
    """Counts every aten op dispatched under it and calls PyTorch's AutocastCUDA kernel of each op
    that has one, once per op, with the call's own arguments: CPU tensors pass that kernel uncast
    (it casts CUDA tensors only), so it runs the op again, except for an op CUDA autocast refuses,
    where it raises as on a GPU. ``refused``: op -> the error."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.refused: dict[str, str] = {}
        self.bf16 = 0   # ops with a bfloat16 tensor among their arguments

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if name not in self.ops and torch._C._dispatch_has_kernel_for_dispatch_key(name, "AutocastCUDA"):
            try:
                func._op_dk(AUTOCAST_CUDA, *args, **kwargs)
            except RuntimeError as exc:
                self.refused[name] = str(exc).splitlines()[0]
        self.ops[name] += 1
        self.bf16 += any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args)
        return func(*args, **kwargs)


def _load(name: str) -> dict:
    """A shipped config file's own keys (not the files it extends)."""
    data = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    data.pop("extends", None)
    return data


@pytest.fixture(scope="module")
def paper_path(tmp_path_factory):
    """The SynthAVS videos of all three settings preprocessed once, and ``config(setting, **train)``:
    the paper configs for that setting over them."""
    from ssp.datasets.synthavs import generate
    from ssp.stages import STAGES

    tmp = tmp_path_factory.mktemp("paper-path")
    models = save_published_models(tmp / "models")
    data = tmp / "AVSBench-semantic"
    generate(data, seed=2, videos={"v1s": 4, "v1m": 4, "v2": 4}, train=0.5, val=0.25, image_size=48,
             classes=("dog", "guitar", "car"), max_objects=2, progress=False)
    uids = [line.split(",")[1] for line in (data / "metadata.csv").read_text().splitlines()[1:]]
    captions = tmp / "captions.json"
    captions.write_text(json.dumps({u: {"a1": "a man plays a guitar beside a dog", "a2": "guitar, dog"}
                                    for u in uids}))
    here = {"results": str(tmp / "results"), "dataset": {"root": str(data)}, "shards": {"size": 64},
            "preprocess": {"image_size": 48}, "flow": {"backend": "dis"}, "vggish": {"weights": "random"},
            "captions": {"backend": "file", "file": str(captions), "model": None},
            "model": {"mask2former": str(models["mask2former"]), "clip": str(models["clip"]),
                      "text_encoder": str(models["blip"]), "tokenizer": str(models["blip"]), "size": 32,
                      "num_queries": 4, "num_queries_semantic": 6, "hidden_dim": 32, "encoder_layers": 1,
                      "decoder_layers": 2, "heads": 2, "max_text_len": 8},
            "train": {"num_workers": 0, "epochs": 2, "lr_decay_epoch": 1},
            "studies": {"reference": None}, "resources": {"use_gpu": False}}

    def config(setting: str, **train) -> Config:
        raw = merge(merge(_load("paper"), _load(setting)), merge(here, {"train": train}))
        return Config.from_dict(raw)

    cfg = config("avss")                       # every subset: one preprocessing for the three settings
    layout = RunLayout.of(cfg)
    manifest = build_manifest(cfg)
    write_manifest(manifest, layout.manifest)
    for shard in shards_of(manifest):
        for stage in STAGES.values():
            source = layout.shard(stage.source, shard) if stage.source else None
            stage.run(cfg, layout.manifest, shard, layout.shard(stage.name, shard), source)
    return SimpleNamespace(config=config, manifest=manifest, dirs=layout.run, tmp=tmp)


def _setting_videos(manifest, cfg):
    """Two training videos (one step of the paper's batch of 2), one val and one test video of the
    setting's subsets; AVSS's training pair mixes a 5-frame v1m and a 10-frame v2 video."""
    rows = manifest[manifest["subset"].isin(cfg.train.subsets)]
    train = rows[rows["split"] == "train"]
    if "v2" in cfg.train.subsets:
        train = train.groupby("subset").head(1)[lambda d: d["subset"].isin(["v1m", "v2"])]
    picked = [train.head(2)] + [rows[rows["split"] == s].head(1) for s in ("val", "test")]
    return pd.concat(picked).reset_index(drop=True)


def _captions(paper_path):
    from ssp.engine.jobs import load_captions

    return load_captions(sorted((paper_path.dirs / "captions").glob("*.jsonl")))


def _run_setting(paper_path, setting: str, out, *, masks: dict | None = None, **train) -> dict:
    """Stage 1 (S4/MS3: the baseline) trained and, unless ``masks`` (its val and test masks) are
    given, its masks predicted on val and test; then every variant trained, and without ``masks``
    predicting test with them. Returns the stage-1 masks and variant -> its test predictions."""
    from ssp.engine.inference import predict
    from ssp.engine.loop import train as train_model

    cfg = paper_path.config(setting, **train)
    rows = _setting_videos(paper_path.manifest, cfg)
    semantic = cfg.train.task == "semantic"
    common = dict(stage_dirs=paper_path.dirs, captions=_captions(paper_path))
    stage1 = train_model(cfg, rows, "baseline", out / "stage1", task="binary", **common)
    predicting = masks is None
    if predicting:
        masks = {s: out / f"stage1_{s}.h5" for s in ("val", "test")}
        for split, path in masks.items():
            predict(cfg, rows, stage1, split, path, task="binary", **common)
    predictions = {"stage1": masks}
    for name in VARIANTS:
        weights = stage1 if name == "baseline" and not semantic else train_model(
            cfg, rows, name, out / name, stepping_stone=semantic, stage1_val=masks["val"], **common)
        if predicting:
            predictions[name] = out / f"{name}_test.h5"
            predict(cfg, rows, weights, "test", predictions[name], stage1=masks["test"], **common)
    return predictions


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_variant_trains_and_predicts_on_the_paper_path_with_no_op_cuda_autocast_refuses(
        paper_path, setting, tmp_path, caplog):
    """Both of AAVS's phases of every variant and its predictions in fp32 (the paper configs'
    precision), and the training again under CPU bf16 autocast; finite predictions; no op that
    CUDA autocast refuses."""
    from ssp.model.adapters import PHASE2_NOTE

    caplog.set_level(logging.INFO, logger="ssp")
    cfg = paper_path.config(setting)
    assert (cfg.train.tune, cfg.train.precision, cfg.train.num_points) == ("adapters", "fp32", 12544)
    with AutocastAudit() as audit:
        predictions = _run_setting(paper_path, setting, tmp_path / "fp32")
    assert audit.refused == {}, f"ops CUDA autocast refuses: {audit.refused}"
    assert audit.ops["aten::binary_cross_entropy_with_logits"] > 0 and audit.bf16 == 0   # the post-mask term ran
    trainings = len(VARIANTS) + (setting == "avss")                    # stage 1 apart in AVSS
    assert sum(r.getMessage().startswith(f"epoch 2: {PHASE2_NOTE}") for r in caplog.records) == trainings
    key = "labels" if setting == "avss" else "scores"
    masks = predictions.pop("stage1")
    for name, path in predictions.items():
        with h5py.File(path) as h5:
            [vid] = list(h5)
            assert np.isfinite(h5[vid][key][()].astype(np.float32)).all(), name
    with AutocastAudit() as audit:   # the same training under CPU bf16 autocast (predictions run in fp32)
        _run_setting(paper_path, setting, tmp_path / "bf16", masks=masks, precision="bf16")
    assert audit.refused == {}, f"ops CUDA autocast refuses: {audit.refused}"
    assert audit.ops["aten::binary_cross_entropy_with_logits"] > 0 and audit.bf16 > 0


def test_the_audit_refuses_the_post_mask_loss_on_probabilities(paper_path, tmp_path, monkeypatch):
    """The check bites: the post-mask loss on probabilities (PyTorch's binary_cross_entropy, as
    tests/references/postmask.py computes it) is refused at the first step of a post-mask variant."""
    from references.postmask import postmask_frames as on_probabilities

    import ssp.engine.losses
    from ssp.engine.loop import train as train_model

    monkeypatch.setattr(ssp.engine.losses, "postmask_frames",
                        lambda out, labels, flow: on_probabilities(*out.final, labels, flow))
    cfg = paper_path.config("s4", epochs=1)
    rows = _setting_videos(paper_path.manifest, cfg)
    with AutocastAudit() as audit:
        train_model(cfg, rows, "premask_postmask", tmp_path / "m", stage_dirs=paper_path.dirs, max_steps=1)
    assert "aten::binary_cross_entropy" in audit.refused and "unsafe to autocast" in \
        audit.refused["aten::binary_cross_entropy"]


TOLERANCE = 1e-4   # relative (float32 noise: about 1e-6): of the final mask logits' spread, or of the gradients' L2 norm


def _batch(paper_path, cfg, name: str):
    """The setting's two training videos as one batch for variant ``name``, on the CPU."""
    from ssp.engine.build import make_dataset, to_device
    from ssp.engine.data import collate

    rows = _setting_videos(paper_path.manifest, cfg)
    ds, _ = make_dataset(cfg, rows[rows["split"] == "train"], VARIANTS[name], binary=cfg.train.task == "binary",
                         captions=_captions(paper_path),
                         stage_dirs=paper_path.dirs)
    return to_device(collate([ds[0], ds[1]]), "cpu")


def _network(cfg, name: str):
    """Variant ``name`` as the paper configs build it (AAVS's adapters, phase 1), in eval mode: the
    Swin blocks' stochastic depth off, so that two forwards differ only by their inputs."""
    from ssp.engine.build import build_model

    semantic = cfg.train.task == "semantic"
    return build_model(cfg, VARIANTS[name], binary=not semantic, stepping_stone=semantic).eval()


def _mask_logits(model, batch, kw) -> torch.Tensor:
    with torch.no_grad():
        return model(batch["frames"], batch["vggish"], **kw).mask_logits[-1]


def _other_captions(cfg, n: int) -> dict:
    """Token ids and mask [n, 2 L] of other captions (A1, then A2) than the batch's."""
    from ssp.model.vta import load_tokenizer

    tok = load_tokenizer(cfg.model.tokenizer)
    enc = [tok(t, max_length=cfg.model.max_text_len, truncation=True, padding="max_length")
           for t in ("a red car drives past a piano", "car, piano")]
    ids = torch.tensor(enc[0]["input_ids"] + enc[1]["input_ids"]).expand(n, -1)
    mask = torch.tensor(enc[0]["attention_mask"] + enc[1]["attention_mask"]).expand(n, -1)
    return {"text_ids": ids, "text_mask": mask}


def _inputs(model, batch, **change) -> dict:
    """The model's training inputs for the batch (``model_inputs``), with ``change`` put in."""
    from ssp.engine.build import model_inputs

    return {**model_inputs(model, batch, training=True, premask_test="stage1"), **change}


def _difference(model, batch, a: dict, b: dict) -> float:
    """Max abs difference of the final mask logits between inputs ``a`` and ``b``, relative to the
    logits' standard deviation (a random mask head's logits are small)."""
    la, lb = _mask_logits(model, batch, a), _mask_logits(model, batch, b)
    return float((la - lb).abs().max() / la.std())


def _postmask_gradient_change(model, batch, cfg) -> float:
    """|g(L_AVS + lambda'_mask L'_mask) - g(L_AVS)| / |g(L_AVS)| over the trained parameters."""
    from ssp.engine.build import model_inputs
    from ssp.engine.losses import video_losses

    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for use in (True, False):
        out = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test="stage1"))
        loss, _ = video_losses(model, out, batch, binary=cfg.train.task == "binary", postmask_weight=10.0,
                               use_postmask=use, seed=0)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, allow_unused=True)
                                if g is not None]))
    return float((grads[0] - grads[1]).norm() / grads[1].norm())


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_part_of_the_method_changes_what_the_network_computes(paper_path, setting):
    """On fixed weights (the paper configs' seed), in every setting: the pre-mask's M_Pre, the
    captions read through VTA and through att, the stepping stone's value (AVSS, in every variant,
    the text rows included: a stone of 0.6 against 1.0 everywhere, so its tags and its attention
    mask stay the same and only its addition to the decoder's features differs) each change the
    final mask logits by more than TOLERANCE of their spread, and the post-mask term changes the
    gradients by more than TOLERANCE of their norm."""
    cfg = paper_path.config(setting)
    effects = {}
    model, batch = _network(cfg, "premask"), _batch(paper_path, cfg, "premask")
    none = torch.ones_like(batch["flow_mask"], dtype=torch.float32)
    effects["pre-mask M_Pre (Eq. 2) against none"] = _difference(model, batch, _inputs(model, batch),
                                                                 _inputs(model, batch, premask=none))
    for name in ("text_vta", "text_att"):
        model, batch = _network(cfg, name), _batch(paper_path, cfg, name)
        other = _other_captions(cfg, len(batch["frames"]))
        effects[f"captions through {name}"] = _difference(model, batch, _inputs(model, batch),
                                                          _inputs(model, batch, **other))
    model, batch = _network(cfg, "premask_postmask"), _batch(paper_path, cfg, "premask_postmask")
    effects["post-mask term (Eq. 5), gradients"] = _postmask_gradient_change(model, batch, cfg)
    if setting == "avss":
        for name in VARIANTS:
            model, batch = _network(cfg, name), _batch(paper_path, cfg, name)
            low, high = (torch.full(batch["labels"].shape, v) for v in (0.6, 1.0))
            effects[f"stepping stone in {name}"] = _difference(model, batch, _inputs(model, batch, stone=low),
                                                               _inputs(model, batch, stone=high))
    weak = {part: value for part, value in effects.items() if not value > TOLERANCE}
    assert not weak, f"{setting}: parts with no effect above {TOLERANCE}: {weak} (all: {effects})"

