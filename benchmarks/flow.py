"""Optical-flow throughput: pairs per second of each backend, and of a plain per-pair loop over
the Hugging Face model, at 224x224 and 368x496. Prints one JSON line per figure.

    .venv/bin/python benchmarks/flow.py                      # CPU here; GPU if one is present
    .venv/bin/python benchmarks/flow.py --perceiver-config published --pairs 32 --batch-sizes 4 16 64

Perceiver IO uses random weights of the published configuration (41M parameters, 2048 latents,
24 self-attention layers) unless --weights names a local snapshot; speed does not depend on
the weights' values.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ssp.flow import FLOW_SCALE_FACTOR, DISFlow, FarnebackFlow, PerceiverFlow, image_patches

PUBLISHED = dict(num_latents=2048, d_latents=512, d_model=322, num_blocks=1, num_self_attends_per_block=24,
                 num_self_attention_heads=16, num_cross_attention_heads=1, train_size=[368, 496])
SMALL = dict(PUBLISHED, num_latents=256, num_self_attends_per_block=4)
CPU = dict(PUBLISHED, num_latents=64, d_latents=128, num_self_attends_per_block=1, num_self_attention_heads=4)
CONFIGS = {"published": PUBLISHED, "small": SMALL, "cpu": CPU}


def perceiver_model(kind: str, weights: str | None):
    from transformers import PerceiverConfig, PerceiverForOpticalFlow

    if weights:
        return PerceiverForOpticalFlow.from_pretrained(weights, local_files_only=True)
    torch.manual_seed(0)
    return PerceiverForOpticalFlow(PerceiverConfig(**CONFIGS[kind]))


def timed(fn, n_pairs: int, repeat: int = 1) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n_pairs * repeat / (time.perf_counter() - t)


def hf_per_pair_loop(model, device, first, second):
    """The obvious baseline: one pair, one tile-sized forward at a time (frames resized to the tile)."""
    import cv2

    th, tw = model.config.train_size
    for a, b in zip(first, second):
        a, b = (cv2.resize(x, (tw, th)) for x in (a, b))
        x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float().to(device) / 255 * 2 - 1
        with torch.inference_mode():
            model(inputs=image_patches(x).unsqueeze(0)).logits.cpu() * FLOW_SCALE_FACTOR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4, help="pairs per measurement (Perceiver IO)")
    ap.add_argument("--cv-pairs", type=int, default=32, help="pairs per measurement (OpenCV)")
    ap.add_argument("--perceiver-config", choices=list(CONFIGS), default="published",
                    help="published = 41M parameters; small / cpu = cut-down configs for CPU smoke figures")
    ap.add_argument("--sizes", nargs="+", default=["224x224", "368x496"], help="frame sizes HxW")
    ap.add_argument("--weights", help="local Perceiver IO snapshot instead of random weights")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="tiles per forward")
    ap.add_argument("--skip-perceiver", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"
    rng = np.random.default_rng(0)
    model = None if args.skip_perceiver else perceiver_model(args.perceiver_config, args.weights).to(device).eval()
    if device == "cpu":
        print(json.dumps({"note": "no GPU here: CPU figures; the 100 pairs/s goal is for one H100"}), flush=True)
    for h, w in (tuple(map(int, size.split("x"))) for size in args.sizes):
        n_cv = args.cv_pairs
        a, b = (rng.integers(0, 255, (max(n_cv, args.pairs), h, w, 3), dtype=np.uint8) for _ in range(2))
        rows = [("dis-medium", DISFlow("medium"), n_cv), ("dis-fast", DISFlow("fast"), n_cv),
                ("farneback", FarnebackFlow(), n_cv)]
        if model is not None:
            for attention in ("eager", "sdpa"):
                for bs in args.batch_sizes:
                    pf = PerceiverFlow(None, model=perceiver_model(args.perceiver_config, args.weights).to(device),
                                       batch_size=bs, device=device, attention=attention)
                    rows.append((f"perceiver-{attention}-bs{bs}-{args.perceiver_config}", pf, args.pairs))
        for name, est, n in rows:
            rate = timed(lambda: est.pairs(a[:n], b[:n]), n)
            print(json.dumps({"figure": "flow_pairs_per_s", "backend": name, "size": f"{h}x{w}",
                              "pairs_per_s": round(rate, 3), "device": machine}), flush=True)
        if model is not None:
            n = args.pairs
            ref = PerceiverFlow(None, model=perceiver_model(args.perceiver_config, args.weights).to(device),
                                batch_size=max(args.batch_sizes), device=device, attention="sdpa")
            fp32 = ref.pairs(a[:n], b[:n])
            ref.dtype = torch.bfloat16
            bf16 = ref.pairs(a[:n], b[:n])
            epe = float(np.sqrt(((fp32 - bf16) ** 2).sum(-1)).mean())
            print(json.dumps({"figure": "flow_bf16_vs_fp32_epe_px", "size": f"{h}x{w}", "mean_epe_px": round(epe, 5),
                              "max_abs_fp32_px": round(float(np.abs(fp32).max()), 4), "device": machine}), flush=True)
            rate = timed(lambda: hf_per_pair_loop(model, device, a[:n], b[:n]), n)
            print(json.dumps({"figure": "flow_pairs_per_s", "backend": f"hf-per-pair-loop-{args.perceiver_config}",
                              "size": f"{h}x{w}", "pairs_per_s": round(rate, 3), "device": machine,
                              "note": "frames resized to one tile, no tiling"}), flush=True)


if __name__ == "__main__":
    main()
