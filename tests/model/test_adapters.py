"""AAVS's adapters (`train.tune: adapters`): where they sit, what is trained in each phase, and the
two-phase schedule through the trainer (restart from the best epoch, resume, predictions)."""
import json
import re

import pandas as pd
import pytest
import torch
from conftest import assert_same_adam_step, tiny_run_config

from ssp.datasets.manifest import read_manifest
from ssp.engine.checkpoint import read_checkpoint, read_trained
from ssp.engine.loop import build_model, train
from ssp.layout import RunLayout
from ssp.model import adapters
from ssp.variants import VARIANTS

# what AAVS's scripts train, by our parameter names (avs: binary tasks; avss: semantic)
TRAINED = {"avs_adapt", "queries_embedder", "queries_features", "class_predictor", "audio.proj"}
VTA_OWN = re.compile(r"^vta\.(mlp_v|mlp_t|align|norm|cross)\.")


def _trained(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _kinds(names) -> set[str]:
    return {k for k in TRAINED | {"swin_adapt", "stone."} for n in names if k in n} | \
        {"vta own" for n in names if VTA_OWN.match(n)}


def test_adapters_sit_where_aavs_puts_them_and_start_as_the_identity(tmp_path):
    cfg = tiny_run_config(tmp_path)
    plain = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full").eval()
    adapted = build_model(cfg, VARIANTS["baseline"], binary=True, tune="adapters").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():   # phase 1: the Swin adapters are zero, the backbone computes what it did
        for a, b in zip(plain.m2f.model.pixel_level_module.encoder(x).feature_maps,
                        adapted.m2f.model.pixel_level_module.encoder(x).feature_maps):
            assert torch.equal(a, b)
    names = dict(adapted.named_parameters())
    swin = [n for n in names if "swin_adapt" in n]
    # two per Swin layer (after the attention's projection and the MLP's), two linear layers each
    layers = sum(cfg.model.backbone["depths"])
    assert len(swin) == layers * 2 * 4
    assert all(re.search(r"(attention\.o_proj|mlp\.fc2)\.swin_adapt\.[02]\.(weight|bias)$", n) for n in swin)
    avs = [n for n in names if "avs_adapt" in n]
    assert {re.sub(r"\.avs_adapt.*", "", n).split(".")[-1] for n in avs} == {"output_proj", "out_proj"}
    bottleneck = names[swin[0]]
    assert bottleneck.shape[0] == cfg.model.backbone["embed_dim"] // 4
    # the replaced projections are gone, the adapted ones keep their pretrained weights
    assert not any(n.endswith(("self_attn.output_proj.weight", "self_attn.out_proj.weight")) for n in names)
    assert any(n.endswith("attention.o_proj.linear.weight") for n in names)


def test_what_each_phase_trains(tmp_path):
    cfg = tiny_run_config(tmp_path)
    binary = build_model(cfg, VARIANTS["full"], binary=True, tune="adapters")
    assert _kinds(_trained(binary)) == TRAINED | {"vta own"}
    assert not any(n.startswith(("vta.clip.", "vta.text.")) or "swin_adapt" in n for n in _trained(binary))
    assert not any(n.startswith("m2f.model.pixel_level_module.encoder.") for n in _trained(binary))
    line = adapters.set_phase(binary, phase=2, binary=True)
    assert _kinds(_trained(binary)) == TRAINED | {"vta own", "swin_adapt"}
    assert "phase 2" in line and "Swin adapters" in line
    semantic = build_model(cfg, VARIANTS["baseline"], binary=False, stepping_stone=True, tune="adapters")
    assert _kinds(_trained(semantic)) == TRAINED - {"queries_features"} | {"stone."}   # as AAVS's AVSS script
    full = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full")
    assert all(p.requires_grad for p in full.parameters())
    with pytest.raises(ValueError, match="once"):
        adapters.install(binary.m2f)


def test_swin_adapters_reset_from_a_seed(tmp_path):
    model = build_model(tiny_run_config(tmp_path), VARIANTS["baseline"], binary=True, tune="adapters")
    rng = torch.get_rng_state()
    adapters.reset_swin_adapters(model, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)
    first = [p.clone() for a in adapters.swin_adapters(model) for p in a.parameters()]
    assert all((p.abs().sum() > 0) == (p.dim() == 2) for p in first)   # N(0, 0.02) weights, zero biases
    adapters.zero_swin_adapters(model)
    adapters.reset_swin_adapters(model, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, (p for a in adapters.swin_adapters(model)
                                                         for p in a.parameters())))


def test_two_phases_restart_from_the_best_epoch(tiny_run, tmp_path, monkeypatch, caplog):
    """Epochs 1-2 train phase 1 (frozen backbone, zero Swin adapters); epoch 3, the first decay,
    starts from epoch 1's weights (the best validation mIoU) with fresh Swin adapters and trains
    them too."""
    import ssp.engine.loop

    cfg = tiny_run_config(tiny_run, epochs=4, lr_decay_epoch=2, tune="adapters", grad_clip=0.01, lr=0.01)
    m = read_manifest(RunLayout.of(cfg).manifest)
    scores = iter([0.5, 0.2, 0.1, 0.1])
    real_validate, real_start = ssp.engine.loop.validate, ssp.engine.loop.start_phase2
    monkeypatch.setattr(ssp.engine.loop, "validate", lambda *a, **k: real_validate(*a, **k) | {"val_miou": next(scores)})
    at_phase2 = {}

    def start(model, best, *args, **kwargs):
        at_phase2["best"] = best.load()
        out = real_start(model, best, *args, **kwargs)
        at_phase2["model"] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(ssp.engine.loop, "start_phase2", start)
    initial = build_model(cfg, VARIANTS["baseline"], binary=True).state_dict()
    with caplog.at_level("INFO", logger="ssp.engine.loop"):
        out = train(cfg, m, "baseline", tmp_path / "a", captions={})
    assert "epoch 3: AAVS phase 2" in caplog.text and "from the weights of epoch 1" in caplog.text
    # phase 2 started from epoch 1's weights, the Swin adapters aside, which start afresh
    for k, v in at_phase2["model"].items():
        if "swin_adapt" in k:
            assert (v.abs().sum() > 0) == k.endswith("weight") and at_phase2["best"][k].abs().sum() == 0, k
        else:
            assert torch.equal(v, at_phase2["best"][k]), k
    ckpt = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    saved = read_trained(out)
    assert ckpt["phase"] == 2 and saved["tune"] == "adapters" and saved["selected"]["epoch"] == 1
    last = ckpt["model"]
    # what neither phase trains is as built (the random init stands for the pretrained weights)
    frozen = [k for k in initial if not any(t in k for t in TRAINED | {"swin_adapt"})]
    assert frozen and all(torch.equal(initial[k], last[k]) for k in frozen)
    # the Swin adapters moved in phase 2, the avs adapters in both
    assert all(not torch.equal(last[k], at_phase2["model"][k]) for k in last if "swin_adapt.2.weight" in k)
    assert all(not torch.equal(last[k], initial[k]) for k in last if "avs_adapt.2.weight" in k)
    lr = pd.read_csv(tmp_path / "a" / "metrics.csv").query("name == 'lr'")
    assert sorted(set(pd.to_numeric(lr["value"]).round(8))) == [1e-03, 1e-02]   # the schedule goes on
    monkeypatch.undo()
    late = tiny_run_config(tiny_run, epochs=2, lr_decay_epoch=2, tune="adapters")   # no decay, no phase 2
    train(late, m, "baseline", tmp_path / "b", captions={})
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["phase"] == 1


def test_resume_across_the_phase_boundary(tiny_run, tmp_path):
    """Stopped at the end of phase 1 (before its last validation) or inside phase 2, and resumed,
    a run reaches the uninterrupted run's weights."""
    cfg = tiny_run_config(tiny_run, epochs=2, tune="adapters", grad_clip=0.05)
    m = read_manifest(RunLayout.of(cfg).manifest)
    ref = read_trained(train(cfg, m, "baseline", tmp_path / "ref", captions={}))
    steps = len(pd.read_csv(tmp_path / "ref" / "metrics.csv").query("name == 'loss'")) // 2   # per epoch
    for stop in (steps, steps + 1):
        out = tmp_path / f"stop{stop}"
        train(cfg, m, "baseline", out, captions={}, max_steps=stop)
        assert read_checkpoint(out / "checkpoint.pt")["phase"] == (1 if stop == steps else 2)
        got = read_trained(train(cfg, m, "baseline", out, captions={}))
        assert got["selected"] == ref["selected"]
        for k, v in ref["model"].items():
            torch.testing.assert_close(got["model"][k], v, rtol=0, atol=1e-6, msg=k)
    assert json.loads((tmp_path / "ref" / "best.json").read_text())["validated"] == 2


def test_gradients_are_clipped(tiny_run, tmp_path, monkeypatch):
    cfg = tiny_run_config(tiny_run, epochs=1, grad_clip=1e-3)
    norms = []
    real = torch.optim.AdamW.step

    def step(opt, *a, **k):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real(opt, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    train(cfg, read_manifest(RunLayout.of(cfg).manifest), "baseline", tmp_path / "a", captions={}, max_steps=2)
    assert len(norms) == 2 and max(norms) <= 1e-3 * (1 + 1e-4)
    norms.clear()
    off = tiny_run_config(tiny_run, epochs=1, grad_clip=None)
    train(off, read_manifest(RunLayout.of(cfg).manifest), "baseline", tmp_path / "b", captions={}, max_steps=1)
    assert norms[0] > 1e-2


def test_predictions_build_the_network_the_model_was_trained_with(tiny_run, tmp_path):
    from ssp.engine.inference import load_trained

    cfg = tiny_run_config(tiny_run, epochs=1, tune="adapters")
    out = train(cfg, read_manifest(RunLayout.of(cfg).manifest), "baseline", tmp_path / "a", captions={})
    model = load_trained(tiny_run_config(tiny_run, tune="full"), out, "cpu").model
    assert adapters.has_adapters(model)
    assert torch.equal(model.state_dict()[next(k for k in model.state_dict() if "swin_adapt" in k)],
                       read_trained(out)["model"][next(k for k in model.state_dict()
                                                                          if "swin_adapt" in k)])


def test_ddp_enters_phase_2_as_one_process_does(tiny_run, tmp_path):
    """2 processes x 1 video (gloo) and 1 process x 2 videos, through the first step of phase 2:
    the same losses, and the same Swin adapters after it (DDP wraps the model again, with the
    adapters' gradients averaged over the processes)."""
    import os
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    cfg = tiny_run_config(tiny_run, epochs=2, batch_size=2, tune="adapters", grad_clip=0.01)
    raw_ddp = yaml.safe_load(yaml.safe_dump(cfg.raw))
    raw_ddp["train"]["batch_size"] = 1
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    out = {}
    for name, raw, nproc in (("single", cfg.raw, 1), ("ddp", raw_ddp, 2)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ssp", "train", "--config", str(tmp_path / f"{name}.yaml"), "--variant", "baseline",
               "--out", str(tmp_path / name), "--max-steps", "3"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "AAVS phase 2" in proc.stderr
        out[name] = read_checkpoint(tmp_path / name / "checkpoint.pt")
        losses = pd.read_csv(tmp_path / name / "metrics.csv").query("name == 'loss'")["value"]
        out[name]["losses"] = torch.tensor(pd.to_numeric(losses).to_numpy())
    assert out["single"]["phase"] == out["ddp"]["phase"] == 2 and len(out["ddp"]["losses"]) == 3
    # within float order: a batch of one and of two take other kernels, which can swap near-equal
    # points of the loss's uncertainty sampling (top-k), and Adam's noise-led weights then move
    # the later losses (assert_same_adam_step); measured on a 2-core Xeon (2026-12-04): 9.5e-5
    # relative at the first step, 1.3e-4 at the third
    torch.testing.assert_close(out["single"]["losses"], out["ddp"]["losses"], rtol=1e-3, atol=1e-3)
    adapters = [k for k in out["single"]["model"] if "swin_adapt" in k]
    assert adapters
    assert_same_adam_step(out["single"]["model"], out["ddp"]["model"], cfg.train.lr, adapters, steps=3)


def test_adapters_go_into_weights_loaded_from_a_folder_and_learn_one_batch(tmp_path, tiny_run):
    """A Mask2Former saved without adapters (as the published one is) loads, takes the adapters
    and keeps every pretrained weight it still uses; the adapted model, with the full variant's
    pre-mask, VTA and post-mask, learns one batch training only what phase 1 trains. (Not to the
    whole network's 0.35 of its first loss, test_model.py: the frozen random tiny backbone and mask
    head leave the masks' losses a floor near 0.75 of it; a pretrained one does not.)"""
    import dataclasses

    from test_model import _batch, fit_one_batch

    cfg, batch = _batch(tiny_run, VARIANTS["full"])
    plain = build_model(cfg, VARIANTS["full"], binary=True, tune="full")
    plain.m2f.save_pretrained(tmp_path / "m2f")
    m = dataclasses.replace(cfg.model, mask2former=str(tmp_path / "m2f"), raw=cfg.model.raw)
    cfg = dataclasses.replace(cfg, model=m, train=dataclasses.replace(cfg.train, tune="adapters"))
    torch.manual_seed(0)
    model = build_model(cfg, VARIANTS["full"], binary=True)
    ours = model.m2f.state_dict()
    replaced = re.compile(r"(self_attn\.output_proj|self_attn\.out_proj)\.(weight|bias)$")
    for k, v in plain.m2f.state_dict().items():
        k2 = re.sub(r"(attention\.o_proj|mlp\.fc2)\.", r"\1.linear.", k)
        assert (k2 in ours and torch.equal(ours[k2], v)) or replaced.search(k), k
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    losses = fit_one_batch(model, batch)
    assert min(losses[-5:]) < 0.8 * losses[0], losses[::10]
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in frozen.items())


def test_run_summary_says_what_training_changes(tmp_path):
    from ssp.reporting.summary import run_notes

    assert run_notes(tiny_run_config(tmp_path)) == ["Training: every weight is trained (train.tune: full)."]
    note, = run_notes(tiny_run_config(tmp_path, tune="adapters", epochs=4, lr_decay_epoch=2))
    assert "AAVS's adapters" in note and "from epoch 3" in note and "RANDOM" in note
    assert "no phase 2" in run_notes(tiny_run_config(tmp_path, tune="adapters", epochs=2, lr_decay_epoch=2))[0]
