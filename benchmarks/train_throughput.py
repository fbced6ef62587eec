"""Training throughput: our trainer's settings against the AAVS recipe, same model, same machine.

  aavs  : fp32, one video per step, AdamW (for-each), the HF-style eager model
  ours  : bf16 autocast (CUDA), channels-last, fused AdamW (CUDA), `--batch` videos per step,
          optionally torch.compile (--compile)

Prints one JSON line per setting (videos per second over `--steps` steps after warm-up).

    .venv/bin/python benchmarks/train_throughput.py [--config config.yaml] [--batch 4] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.config import load  # noqa: E402
from ssp.data import collate  # noqa: E402
from ssp.datasets import read_manifest  # noqa: E402
from ssp.losses import video_losses  # noqa: E402
from ssp.model.ssp import VARIANTS  # noqa: E402
from ssp.train import build_model, make_dataset, model_inputs, select, to_device  # noqa: E402


def run(cfg, ds, *, batch: int, bf16: bool, channels_last: bool, fused: bool, compile_: bool, steps: int,
        device) -> float:
    torch.manual_seed(0)
    model = build_model(cfg, VARIANTS["baseline"], binary=True).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    ac = dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(i):
        items = [ds[(i * batch + k) % len(ds)] for k in range(batch)]
        b = to_device(collate(items), device)
        with torch.autocast(**ac):
            out = fwd(b["frames"], b["vggish"], **model_inputs(model, b, training=True, premask_test="flow"))
            loss, _ = video_losses(model, out, b, binary=True, postmask_weight=10, use_postmask=False, seed=0, step=i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(2):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i + 2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    cfg = load(args.config)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    machine = torch.cuda.get_device_name(0) if cuda else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    manifest = read_manifest(cfg.run_dir / "manifest.csv")
    ds, _ = make_dataset(cfg, select(manifest, cfg, "train"), VARIANTS["baseline"])
    settings = {"aavs": dict(batch=1, bf16=False, channels_last=False, fused=False, compile_=False),
                "ours": dict(batch=args.batch, bf16=cuda, channels_last=True, fused=cuda, compile_=args.compile)}
    rates = {}
    for name, kw in settings.items():
        rates[name] = run(cfg, ds, steps=args.steps, device=device, **kw)
        print(json.dumps({"figure": "train_videos_per_s", "setting": name, **{k.rstrip("_"): v for k, v in kw.items()},
                          "videos_per_s": round(rates[name], 3), "model_size": cfg.model.size, "device": machine}),
              flush=True)
    print(json.dumps({"figure": "train_speedup", "value": round(rates["ours"] / rates["aavs"], 2),
                      "device": machine}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
