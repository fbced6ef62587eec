"""Training throughput: our trainer's step against the AAVS recipe, same model, same machine, same run.

  aavs      : the reference recipe: fp32, one video per step, AdamW (for-each), NCHW, and the
              Hugging Face Mask2Former loss computed video by video
  ours-...  : ``ssp.engine.loop.training_setup`` + ``train_step``, exactly what the trainer runs: bf16
              autocast and fused AdamW on CUDA, the batched loss (``ssp.engine.criterion``), ``--batch``
              videos per step; then with channels-last, then (``--compile``) torch.compile

Prints one JSON line per setting (videos per second over ``--steps`` steps after warm-up) and the
speed-up of each over the AAVS recipe.

    .venv/bin/python benchmarks/train_throughput.py                       # the demo's shards and model
    python benchmarks/train_throughput.py --model paper --data synthetic --batch 4 --compile   # GPU

``--model paper`` builds the paper's network (Swin-B, 384 px, schema defaults) with random
weights; ``--data synthetic`` feeds random 5-frame videos from memory, so no shards are needed.
Speed does not depend on the weights' or the pixels' values. ``--tune adapters-phase1`` /
``adapters-phase2`` train AAVS's adapters (``train.tune: adapters``) in every setting, the AAVS
recipe included, as its scripts do; the default trains the whole network in every setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))   # the Hugging Face reference loss (the AAVS recipe's)

from references.hf_loss import reference_avs_losses

from ssp.config import Config
from ssp.datasets.manifest import read_manifest
from ssp.engine.data import collate
from ssp.engine.loop import (
    build_model,
    clip_gradients,
    make_dataset,
    model_inputs,
    select,
    to_device,
    train_step,
    training_setup,
)
from ssp.engine.losses import video_losses
from ssp.layout import RunLayout
from ssp.variants import VARIANTS

PAPER_MODEL_KEYS = ("size", "num_queries", "hidden_dim", "encoder_layers", "decoder_layers", "heads", "backbone",
                    "clip_config", "text_config", "max_text_len")


def load_config(path: str, model: str) -> Config:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if model == "paper":  # drop the demo's cut-down sizes: the schema's defaults are the paper's
        raw["model"] = {k: v for k, v in raw.get("model", {}).items() if k not in PAPER_MODEL_KEYS}
        raw.setdefault("train", {}).pop("num_points", None)
    return Config.from_dict(raw)


class SyntheticVideos:
    """Random videos shaped like the trainer's items (frames at the preprocessing size, all annotated)."""

    def __init__(self, n: int, frames: int, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            labels = np.zeros((frames, size, size), np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            labels[:, y:y + size // 3, x:x + size // 3] = 1
            self.items.append({"video_id": f"synthetic{i}", "frames": rng.integers(0, 255, (frames, size, size, 3), np.uint8),
                               "labels": labels, "has_mask": np.ones(frames, bool),
                               "vggish": rng.standard_normal((frames, 128)).astype(np.float32)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def aavs_setup(model, t):
    """The reference recipe: plain fp32, for-each AdamW, default memory format."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    return model, opt, dict(device_type=next(model.parameters()).device.type, enabled=False)


def aavs_step(fwd, model, opt, batch, autocast, t, *, binary, step):
    """One step of the reference recipe: its loss is the Hugging Face Mask2Former loss, video by video."""
    out = fwd(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test=t.premask_test))
    loss = reference_avs_losses(model, out, batch, binary=binary, seed=t.seed, step=step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, t)
    opt.step()
    return loss, {}


def tuned_model(cfg: Config, setting: dict):
    """The baseline network, its adapters in the setting's phase with ``adapters-phase<k>``."""
    model = build_model(cfg, VARIANTS["baseline"], binary=True, tune="full" if setting["tune"] == "full" else "adapters")
    if setting["tune"] == "adapters-phase2":
        from ssp.model.adapters import enter_phase2

        enter_phase2(model, seed=0, binary=True)
    return model


def measure(cfg: Config, ds, setting: dict, *, steps: int, warmup: int, device) -> float:
    t = dataclasses.replace(cfg.train, channels_last=setting["channels_last"], compile=setting["compile"],
                            precision="bf16" if setting["bf16"] else "fp32")
    torch.manual_seed(0)
    model = tuned_model(cfg, setting).to(device)
    if setting["recipe"] == "aavs":
        fwd, opt, ac = aavs_setup(model, t)
        step_fn = aavs_step
    else:
        fwd, opt, ac = training_setup(model, t, device)
        step_fn = train_step
    batch_n = setting["batch"]

    def step(i):
        items = [ds[(i * batch_n + k) % len(ds)] for k in range(batch_n)]
        b = to_device(collate(items), device, channels_last=t.channels_last)
        step_fn(fwd, model, opt, b, ac, t, binary=True, step=i)

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_n / (time.perf_counter() - start)


class OpCounter(TorchDispatchMode):
    """Counts the tensor operators a step dispatches, views left out: on a GPU each is about one
    kernel launch, so the count is measurable on a CPU. (Host syncs are not: on a CPU, reading a
    value from the device and from a host tensor look the same.)"""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def step_phases(fwd, model, opt, b, ac, t, setting: dict, step: int, mark) -> list:
    """One training step of ``setting``, ``mark()`` called between its phases (forward, loss,
    backward, optimizer); returns the five marks."""
    marks = [mark()]
    with torch.autocast(**ac):
        out = fwd(b["frames"], b["vggish"], **model_inputs(model, b, training=True, premask_test=t.premask_test))
        marks.append(mark())
        if setting["recipe"] == "aavs":
            loss = reference_avs_losses(model, out, b, binary=True, seed=t.seed, step=step)
        else:
            loss, _ = video_losses(model, out, b, binary=True, postmask_weight=t.postmask_weight,
                                   use_postmask=False, seed=t.seed, step=step)
    marks.append(mark())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(mark())
    opt.step()
    marks.append(mark())
    return marks


PHASES = ("forward", "loss", "backward", "optimizer")


def phase_breakdown(cfg: Config, ds, setting: dict, *, steps: int, device, profile: list | None = None,
                    count_ops: bool = False) -> dict:
    """Milliseconds per step in forward, loss, backward and optimizer, with a device sync between
    phases (so the phases do not overlap as they do in ``measure``). With ``count_ops``, one more
    step counts each phase's operators (``OpCounter``). With ``profile`` (a list), one more step
    runs under torch.profiler and the top operators by CPU and device time are appended."""
    t = dataclasses.replace(cfg.train, channels_last=setting["channels_last"], compile=False,
                            precision="bf16" if setting["bf16"] else "fp32")
    torch.manual_seed(0)
    model = tuned_model(cfg, setting).to(device)
    fwd, opt, ac = aavs_setup(model, t) if setting["recipe"] == "aavs" else training_setup(model, t, device)
    n = setting["batch"]
    out = dict.fromkeys(PHASES, 0.0)

    def mark():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    for i in range(steps + 1):
        b = to_device(collate([ds[(i * n + k) % len(ds)] for k in range(n)]), device, channels_last=t.channels_last)
        marks = step_phases(fwd, model, opt, b, ac, t, setting, i, mark)
        if i:  # the first step warms up
            for k, a, z in zip(PHASES, marks, marks[1:]):
                out[k] += (z - a) * 1e3 / steps
    out = {k: round(v, 1) for k, v in out.items()}
    if count_ops:
        with OpCounter() as counter:
            marks = step_phases(fwd, model, opt, b, ac, t, setting, 0, lambda: counter.ops)
        out.update({f"{k}_ops": z - a for k, a, z in zip(PHASES, marks, marks[1:])})
    if profile is not None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            step_phases(fwd, model, opt, b, ac, t, setting, 0, mark)
        events = prof.key_averages()
        for key in ("self_cpu_time_total", "self_device_time_total"):
            top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:12]
            profile.append({"figure": "train_step_top_ops", "by": key, "ms": {e.key[:60]: round(getattr(e, key, 0) / 1e3, 1)
                                                                              for e in top}, "calls": {e.key[:60]: e.count for e in top}})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--model", choices=["config", "paper"], default="config",
                    help="the config's model sizes, or the paper's (Swin-B, 384 px) with random weights")
    ap.add_argument("--data", choices=["shards", "synthetic"], default="shards",
                    help="the run's training shards (after `make demo`), or random videos in memory")
    ap.add_argument("--frames", type=int, default=5, help="frames per synthetic video (S4/MS3: 5)")
    ap.add_argument("--batch", type=int, nargs="+", default=[4], help="videos per step in our settings (one row each)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    ap.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    ap.add_argument("--tune", choices=["full", "adapters-phase1", "adapters-phase2"], default="full",
                    help="what every setting trains: the whole network, or AAVS's adapters in phase 1 or 2")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time forward, loss, backward and optimizer of each setting (no channels-last row)")
    ap.add_argument("--count-ops", action="store_true",
                    help="with --breakdown: also count each phase's tensor operators (about one GPU kernel each)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.model)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    machine = torch.cuda.get_device_name(0) if cuda else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    if args.data == "synthetic":
        ds = SyntheticVideos(max(8, 2 * max(args.batch)), args.frames, cfg.preprocess.image_size)
    else:
        ds, _ = make_dataset(cfg, select(read_manifest(RunLayout.of(cfg).manifest), cfg, "train"), VARIANTS["baseline"], binary=True)
    settings = {"aavs": dict(recipe="aavs", batch=1, bf16=False, channels_last=False, compile=False, tune=args.tune)}
    for n in args.batch:
        settings[f"ours-bs{n}"] = dict(recipe="ours", batch=n, bf16=cuda, channels_last=False, compile=False,
                                       tune=args.tune)
    if not args.breakdown:
        settings["ours-channels-last"] = dict(recipe="ours", batch=max(args.batch), bf16=cuda, channels_last=True,
                                              compile=False, tune=args.tune)
    if args.compile:
        settings["ours-channels-last-compiled"] = dict(settings["ours-channels-last"], compile=True)
    rates = {}
    for name, setting in settings.items():
        try:
            rates[name] = measure(cfg, ds, setting, steps=args.steps, warmup=args.warmup, device=device)
        except Exception as exc:  # report and go on: one failing setting must not lose the others
            print(json.dumps({"figure": "train_videos_per_s", "setting": name, **setting,
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}", "device": machine}), flush=True)
            if cuda:
                torch.cuda.empty_cache()
            continue
        print(json.dumps({"figure": "train_videos_per_s", "setting": name, **setting, "videos_per_s": round(rates[name], 3),
                          "model": f"{args.model} ({cfg.model.size} px)", "data": args.data, "device": machine}), flush=True)
        if args.breakdown:
            top: list = []
            ms = phase_breakdown(cfg, ds, setting, steps=max(2, args.steps // 2), device=device,
                                 profile=top if name != "aavs" else None, count_ops=args.count_ops)
            print(json.dumps({"figure": "train_step_breakdown_ms", "setting": name, "batch": setting["batch"], **ms,
                              "device": machine}), flush=True)
            for row in top:
                print(json.dumps({**row, "setting": name, "device": machine}), flush=True)
    for name, rate in rates.items():
        if name != "aavs" and "aavs" in rates:
            print(json.dumps({"figure": "train_speedup", "setting": name, "over": "aavs",
                              "value": round(rate / rates["aavs"], 2), "device": machine}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
