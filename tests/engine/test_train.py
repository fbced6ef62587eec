"""The trainer: resume equivalence, DDP equivalence, preemption, predictions and metrics logs."""
import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, assert_same_adam_step, tiny_run_config
from safetensors.torch import load_file

from ssp.config import Config
from ssp.datasets.manifest import read_manifest
from ssp.engine.checkpoint import read_checkpoint, read_trained
from ssp.engine.jobs import load_captions
from ssp.engine.loop import Preempted, train
from ssp.layout import RunLayout


def _state(path):
    """The weights of a trained model or a resume checkpoint."""
    return (read_trained(path) if Path(path).suffix == ".safetensors" else read_checkpoint(path))["model"]


def _caps(cfg):
    return load_captions(sorted(RunLayout.of(cfg).stage_dir("captions").glob("*.jsonl")))


def test_resume_reaches_the_same_state(tiny_run, tmp_path):
    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    full = train(cfg, m, "full", tmp_path / "a", captions=_caps(cfg))
    train(cfg, m, "full", tmp_path / "b", captions=_caps(cfg), max_steps=3)     # killed after 3 steps
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(cfg, m, "full", tmp_path / "b", captions=_caps(cfg))
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    log = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert {"loss", "loss_class", "loss_mask", "loss_dice", "loss_postmask", "lr", "val_miou"} <= set(log["name"])


def test_checkpoint_of_other_settings_is_not_resumed(tiny_run, tmp_path, caplog):
    """A re-run after a settings change (Snakemake re-runs the rule; checkpoint.pt is no output, so
    it survives) trains from the start; speed-only settings do not count as a change."""
    import dataclasses
    import logging

    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    train(cfg, m, "baseline", tmp_path / "b", max_steps=2)                     # stopped after 2 steps
    fast = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=0, channels_last=False))
    with caplog.at_level(logging.INFO, logger="ssp.engine.loop"):
        train(fast, m, "baseline", tmp_path / "b", max_steps=3)
    assert "resuming baseline from epoch 0, step 2" in caplog.text
    caplog.clear()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr / 2))
    with caplog.at_level(logging.INFO, logger="ssp.engine.loop"):
        final = train(other, m, "baseline", tmp_path / "b")
    assert "other settings or inputs" in caplog.text and "resuming" not in caplog.text
    fresh = train(other, m, "baseline", tmp_path / "c")
    a, b = _state(final), _state(fresh)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    steps = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert steps[steps["name"] == "loss"]["step"].tolist() == pd.read_csv(tmp_path / "c" / "metrics.csv").query(
        "name == 'loss'")["step"].tolist()   # the log of the restarted run only


def test_a_torn_checkpoint_is_set_aside_and_training_starts_over(tiny_run, tmp_path, caplog):
    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    out = tmp_path / "b"
    train(cfg, m, "baseline", out, max_steps=2)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])      # a flipped or cut disk block
    with caplog.at_level("INFO"):
        train(cfg, m, "baseline", out, max_steps=3)
    assert "checkpoint.pt cannot be read" in caplog.text and "resuming" not in caplog.text
    assert len(list(out.glob("checkpoint.pt.unreadable-*"))) == 1 and read_checkpoint(ckpt)["global_step"] == 3


def test_sigterm_checkpoints_and_resumes(tiny_run, tmp_path, monkeypatch):
    """SIGTERM (SLURM preemption) in the middle of epoch 3: checkpoint, exit code 143, resume."""
    import ssp.engine.loop

    cfg = tiny_run_config(tiny_run, epochs=50)
    m = read_manifest(RunLayout.of(cfg).manifest)
    calls, real_losses = [], ssp.engine.loop.video_losses

    def losses_then_sigterm(*args, **kwargs):
        """As SLURM does: SIGTERM to every process of the job (the loader's workers too) in step 5."""
        calls.append(1)
        if len(calls) == 5:
            workers = multiprocessing.active_children()
            assert len(workers) == cfg.train.num_workers > 0
            for pid in [w.pid for w in workers] + [os.getpid()]:
                os.kill(pid, signal.SIGTERM)
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(ssp.engine.loop, "video_losses", losses_then_sigterm)
    with pytest.raises(Preempted) as exc:
        train(cfg, m, "baseline", tmp_path / "p", captions={})
    monkeypatch.undo()
    assert exc.value.code == 143
    # the traceback keeps train()'s frame alive: its DataLoader workers must be gone all the same,
    # or the interpreter waits for them at exit
    assert multiprocessing.active_children() == []
    state = read_checkpoint(tmp_path / "p" / "checkpoint.pt")
    assert state["global_step"] == 5 and state["epoch"] == 2 and state["step_in_epoch"] == 1
    cfg2 = tiny_run_config(tiny_run, epochs=state["epoch"] + 1)
    train(cfg2, m, "baseline", tmp_path / "p", captions={})
    assert (tmp_path / "p" / "model.safetensors").exists()


def test_the_trained_model_holds_the_best_validation_epoch(tiny_run, tmp_path, monkeypatch):
    """As AVSBench and AAVS keep their best validation checkpoint: the trained model is the epoch of the best
    validation mIoU (the first, on ties); `select: last` chooses the last epoch without training
    again; a run stopped while validating an epoch validates it when resumed."""
    import dataclasses

    import ssp.engine.loop

    cfg = tiny_run_config(tiny_run, epochs=4)
    m = read_manifest(RunLayout.of(cfg).manifest)
    scores = iter([0.2, 0.5, 0.5, 0.3] * 2)      # val mIoU of epochs 1-4, twice: epoch 2 is the best
    real = ssp.engine.loop.validate

    def scripted(*args, **kwargs):
        return real(*args, **kwargs) | {"val_miou": next(scores)}

    monkeypatch.setattr(ssp.engine.loop, "validate", scripted)
    out = train(cfg, m, "baseline", tmp_path / "a", captions={})
    saved = read_trained(out)
    assert saved["selected"] == {"by": "best validation mIoU", "epoch": 2, "val_miou": 0.5}
    best = load_file(str(tmp_path / "a" / "best.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in saved["model"].items())
    last = _state(tmp_path / "a" / "checkpoint.pt")
    assert not all(torch.equal(last[k], v) for k, v in saved["model"].items())
    steps = len(pd.read_csv(tmp_path / "a" / "metrics.csv").query("name == 'loss'"))

    last_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, select="last"))
    out = train(last_cfg, m, "baseline", tmp_path / "a", captions={})     # the finished run: no training
    saved = read_trained(out)
    assert saved["selected"] == {"by": "train.select: last", "epoch": 4}
    assert all(torch.equal(last[k], v) for k, v in saved["model"].items())
    assert len(pd.read_csv(tmp_path / "a" / "metrics.csv").query("name == 'loss'")) == steps

    calls = []

    def stopped_in_epoch_3(*args, **kwargs):   # preempted while validating epoch 3
        calls.append(1)
        if len(calls) == 3:
            raise Preempted(143)
        return scripted(*args, **kwargs)

    monkeypatch.setattr(ssp.engine.loop, "validate", stopped_in_epoch_3)
    with pytest.raises(Preempted):
        train(cfg, m, "baseline", tmp_path / "b", captions={})
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 3
    assert json.loads((tmp_path / "b" / "best.json").read_text())["validated"] == 2
    monkeypatch.setattr(ssp.engine.loop, "validate", scripted)
    scores = iter([0.5, 0.3])                   # epoch 3 (validated on resuming), epoch 4
    out = train(cfg, m, "baseline", tmp_path / "b", captions={})
    assert read_trained(out)["selected"]["epoch"] == 2
    assert json.loads((tmp_path / "b" / "best.json").read_text())["validated"] == 4

    # a finished run from before best.json: only what is validated from now on can be chosen, and
    # the trained model says which epochs those were
    (tmp_path / "b" / "best.json").unlink()
    (tmp_path / "b" / "best.safetensors").unlink()
    scores = iter([0.1])
    out = train(cfg, m, "baseline", tmp_path / "b", captions={})
    assert read_trained(out)["selected"] == {"by": "best validation mIoU of epochs 4-4",
                                                               "epoch": 4, "val_miou": 0.1}


def test_ddp_two_processes_equal_one(tiny_run, tmp_path, monkeypatch):
    """2 processes x 1 video (gloo) give the same per-step loss and update as 1 process x 2 videos.
    The DDP runs are the training job's own relaunch (``train.gpus: 2``), two of them started at
    once while a third process holds port 29500, as jobs share a node: they do not collide
    (``torchrun --standalone``; torch releases since early 2026 also pick a free port on one
    node without it, the 2.7 of envs/torch.yaml does not).

    Weights are compared after one step: after that, Adam's near-sign updates of parameters
    whose gradient is ~0 let float noise grow, so later steps are compared through the loss.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ssp.engine.jobs import run_training

    cfg = tiny_run_config(tiny_run, epochs=1, batch_size=2)
    raw_ddp = yaml.safe_load(yaml.safe_dump(cfg.raw))
    raw_ddp["train"].update(batch_size=1, gpus=2)
    ddp = Config.from_dict(raw_ddp)
    outs = {name: tmp_path / name for name in ("single", "ddp", "ddp2")}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def single(steps):
        conf = tmp_path / "single.yaml"
        conf.write_text(yaml.safe_dump(cfg.raw))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "ssp",
               "train", "--config", str(conf), "--variant", "baseline", "--out", str(outs["single"]),
               "--max-steps", str(steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    single(1)
    with contextlib.ExitStack() as held, ThreadPoolExecutor(2) as pool:   # two relaunches at once
        try:   # and a third job holding torchrun's static port (what an older torch takes without --standalone)
            held.enter_context(socket.create_server(("127.0.0.1", 29500)))
        except OSError:
            pass
        list(pool.map(lambda name: run_training(ddp, "baseline", outs[name], max_steps=1), ("ddp", "ddp2")))
    a = read_checkpoint(outs["single"] / "checkpoint.pt")["model"]
    for name in ("ddp", "ddp2"):
        b = read_checkpoint(outs[name] / "checkpoint.pt")["model"]
        assert_same_adam_step(a, b, cfg.train.lr)
    single(2)   # resumes from the step-1 checkpoint
    run_training(ddp, "baseline", outs["ddp"], max_steps=2)
    la, lb = (pd.read_csv(outs[n] / "metrics.csv") for n in ("single", "ddp"))
    la, lb = (x[x["name"] == "loss"]["value"].to_numpy() for x in (la, lb))
    assert len(la) == len(lb) == 2
    # the second loss follows the first step's noise-led weights (assert_same_adam_step)
    torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), rtol=1e-4, atol=1e-4)


def test_predictions_format(tiny_run, tmp_path):
    from ssp.engine.inference import predict

    cfg = tiny_run_config(tiny_run, epochs=1)
    m = read_manifest(RunLayout.of(cfg).manifest)
    base = train(cfg, m, "baseline", tmp_path / "base", captions={})
    predict(cfg, m, base, "test", tmp_path / "base.h5")
    full = train(cfg, m, "full", tmp_path / "full", captions=_caps(cfg))
    predict(cfg, m, full, "test", tmp_path / "full.h5", captions=_caps(cfg), stage1=tmp_path / "base.h5")
    with h5py.File(tmp_path / "full.h5") as h5:
        assert h5.attrs["premask_test"] == "stage1" and h5.attrs["variant"] == "full"
        vids = [k for k in h5.keys()]
        assert vids
        s = h5[vids[0]]["scores"][()]
        assert s.dtype == "float32" and s.shape[1:] == (48, 48) and 0 <= s.min() and s.max() <= 1
    with h5py.File(tmp_path / "base.h5") as h5:   # binary masks: the argmax, as AAVS saves its stage-1 masks
        vid = next(iter(h5))
        masks, scores = h5[vid]["masks"][()], h5[vid]["scores"][()]
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1} and (masks == (scores > 0.5)).all()
    from ssp.engine.build import make_dataset, select
    from ssp.variants import VARIANTS

    ds, _ = make_dataset(cfg, select(m, cfg, "test"), VARIANTS["full"], binary=True, stage1=tmp_path / "base.h5",
                         captions=_caps(cfg))
    item = ds[list(ds.rows["video_id"]).index(vid)]
    assert np.array_equal(item["stage1"], masks)   # the stones and the pre-mask's stand-in at test
    from PIL import Image

    from ssp.engine.inference import write_pngs

    assert write_pngs(tmp_path / "full.h5", tmp_path / "png") == len(vids) * s.shape[0]
    png = np.asarray(Image.open(tmp_path / "png" / vids[0] / "0.png"))
    assert png.shape == (48, 48) and set(np.unique(png)) <= {0, 255}
    assert ((s[0] > 0.5) * 255 == png).all()
    # weights that do not fit this config (another run's, predict.models_from) are named with why
    from ssp.engine.inference import load_trained

    other = dict(cfg.raw, model={**cfg.raw["model"], "hidden_dim": 64})
    with pytest.raises(ValueError, match=r"base/model\.safetensors was trained with another model section than this "
                                         r"config's \(model\.hidden_dim: trained 32, configured 64\)"):
        load_trained(Config.from_dict(other), base, "cpu")
    # the same weights fit a network of another input size: named all the same, before loading
    other = dict(cfg.raw, model={**cfg.raw["model"], "size": 64, "premask_image": "raw"})
    with pytest.raises(ValueError, match=r"model\.premask_image: trained 'normalized', configured 'raw'; "
                                         r"model\.size: trained 32, configured 64\)"):
        load_trained(Config.from_dict(other), base, "cpu")
    with pytest.raises(ValueError, match=r"model for the binary task, where this run needs one for the semantic"):
        load_trained(cfg, base, "cpu", task="semantic")


def test_semantic_stage2_trains_and_validates_as_avss_scores(tiny_run, tmp_path, monkeypatch):
    """Stage 2 keeps its best validation epoch by AVSS mIoU, validated as AAVS's evaluation does,
    with the stage-1 masks of the val split as the stones: the figure `ssp evaluate` gives that
    epoch's predictions from the same stones. Without them, validation takes the ground truth's
    foreground and says so."""
    import ssp.engine.loop
    from ssp.engine.inference import load_trained, predict
    from ssp.engine.jobs import run_training
    from ssp.engine.loop import make_dataset, select, validate
    from ssp.evaluation.scoring import evaluate
    from ssp.io.store import ShardWriter
    from ssp.variants import VARIANTS

    cfg = tiny_run_config(tiny_run, epochs=2, task="semantic", subsets=["v1s", "v1m", "v2"])
    m = read_manifest(RunLayout.of(cfg).manifest)
    ds, _ = make_dataset(cfg, select(m, cfg, "val"), VARIANTS["baseline"], binary=False)
    with ShardWriter(tmp_path / "stones.h5", {}) as w:   # stage-1 masks of the val split: here, the truth's
        for i in range(len(ds)):
            item = ds[i]
            assert item["has_mask"].all()
            w.add(item["video_id"], {"masks": (item["labels"] > 0).astype(np.uint8)})
    stones, real = [], ssp.engine.loop.predict_video

    def predict_video(model, batch, *args, **kwargs):
        stones.append("stones" not in batch and torch.equal(batch["stage1"].float(), (batch["labels"] > 0).float()))
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(ssp.engine.loop, "predict_video", predict_video)
    path = run_training(cfg, "baseline", tmp_path / "sem", captions_files=[], max_steps=None,
                        stage1_val=tmp_path / "stones.h5")
    assert stones and all(stones)   # every validation video, both epochs: the stage-1 masks as stones
    monkeypatch.undo()
    state = read_trained(path)
    assert state["task"] == "semantic" and state["stepping_stone"]
    assert state["model"]["m2f.class_predictor.weight"].shape[0] == 72   # 71 classes + no-object
    best = json.loads((tmp_path / "sem" / "best.json").read_text())
    assert state["selected"] == {"by": "best validation mIoU", "epoch": best["epoch"], "val_miou": best["val_miou"]}
    val = pd.read_csv(tmp_path / "sem" / "metrics.csv").query("kind == 'val'")
    assert set(val.query("name == 'val_stones'")["value"]) == {"stage1"}
    predict(cfg, m, path, "val", tmp_path / "val.h5", stage1=tmp_path / "stones.h5")
    scored = evaluate("avss", cfg.dataset_root, tmp_path / "val.h5", split="val")
    assert scored["miou"] == pytest.approx(best["val_miou"], abs=1e-9)
    model = load_trained(cfg, path, "cpu").model
    assert validate(cfg, m, model, VARIANTS["baseline"], False, "cpu")["val_stones"] == "ground truth"
    # the metrics say which epoch of training they score, for the tables
    assert (scored["model_epoch"], scored["model_by"]) == (best["epoch"], "best validation mIoU")


def test_validation_uses_the_stand_in_test_uses(tiny_run, caplog):
    """The pre-mask's M_GT in validation is test's stand-in (train.premask_test): with stage1, the
    stage-1 model's predictions of the val split; without them, the flow rule, said in the log."""
    from ssp.engine.build import build_model, make_dataset, select
    from ssp.engine.loop import validate
    from ssp.io.store import ShardWriter
    from ssp.variants import VARIANTS

    cfg = tiny_run_config(tiny_run)
    m = read_manifest(RunLayout.of(cfg).manifest)
    ds, _ = make_dataset(cfg, select(m, cfg, "val"), VARIANTS["baseline"], binary=True)
    stage1 = tiny_run / "stage1_val.h5"
    with ShardWriter(stage1, {}) as w:
        for i in range(len(ds)):
            w.add(ds[i]["video_id"], {"scores": (ds[i]["labels"] > 0).astype(np.float32)})
    torch.manual_seed(0)
    model = build_model(cfg, VARIANTS["premask"], binary=True, tune="full")
    with_stage1 = validate(cfg, m, model, VARIANTS["premask"], True, "cpu", stage1=stage1)
    assert with_stage1["val_premask"] == "stage1"
    import ssp.io.logs

    ssp.io.logs.warn_once.cache_clear()                                 # said once per process
    with caplog.at_level("WARNING", logger="ssp.engine.loop"):
        without = validate(cfg, m, model, VARIANTS["premask"], True, "cpu")
    assert without["val_premask"] == "flow" and "where test uses 'stage1'" in caplog.text
    assert with_stage1["val_miou"] != without["val_miou"] or with_stage1["val_fscore"] != without["val_fscore"]
    empty = validate(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, premask_test="empty")), m, model,
                     VARIANTS["premask"], True, "cpu")
    assert empty["val_premask"] == "empty"


def test_several_gpus_relaunch_under_torchrun_with_what_the_rule_declared(tmp_path, monkeypatch):
    """train.gpus > 1: the job runs itself again under torchrun, with the declared inputs, the
    stage-1 val predictions, --max-steps, and the package on the path (conda envs do not install it)."""
    import ssp.engine.jobs
    from ssp.engine.jobs import run_training

    seen = {}
    monkeypatch.setattr(ssp.engine.jobs.subprocess, "run", lambda cmd, **kw: seen.update(cmd=cmd, **kw))
    cfg = tiny_run_config(tmp_path, gpus=2)
    inputs = {"manifest": str(tmp_path / "manifest.csv"), "frames": [str(tmp_path / "frames" / "00000.h5")]}
    run_training(cfg, "full", tmp_path / "out", captions_files=["c.jsonl"], max_steps=3, inputs=inputs,
                 stage1_val=tmp_path / "val.h5")
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in cmd
    assert cmd[cmd.index("--max-steps") + 1] == "3" and cmd[cmd.index("--stage1-val") + 1] == str(tmp_path / "val.h5")
    declared = json.loads(Path(cmd[cmd.index("--inputs") + 1]).read_text())
    assert declared == {"manifest": inputs["manifest"], "frames": inputs["frames"]}
    assert str(ROOT / "src") in seen["env"]["PYTHONPATH"].split(os.pathsep)
