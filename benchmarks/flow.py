"""Optical-flow throughput and accuracy: pairs per second of each backend, and how far the fast
Perceiver IO paths (SDPA attention, folded cross-attentions, bf16) are from the Hugging Face
forward. One JSON line per figure.

    .venv/bin/python benchmarks/flow.py --perceiver-config cpu          # CPU smoke figures
    python benchmarks/flow.py --frames ../shared/media/chaplin.mp4        # GPU (benchmarks/gpu.sh)

Rows, at each ``--sizes`` frame size:
  opencv           DIS (medium, fast) and Farneback (``--skip-opencv`` leaves them out)
  hf-eager-bsN     the Hugging Face forward, N tiles per forward, fp32 (``--hf-batch-sizes``)
  ATT-DTYPE-bsN    our paths (``--attentions``): ``sdpa``, every attention through
                   scaled_dot_product_attention (or blockwise GEMMs); ``folded``, the same with the
                   two cross-attentions' projections folded into their short side
                   (``--batch-sizes``, ``--dtypes``)
  hf-per-pair-loop the obvious baseline: one pair per forward, frames resized to one tile
A batch size that runs out of GPU memory prints a row with "error": "out of memory".

Accuracy (``flow_equality``): on real frames (``--frames``: a video, or an .npz with ``frames``
[N, H, W, 3]) or random ones, with the random decoder's output layer scaled so that flows are
about ``--target-px`` pixels (random weights give ~0.01 px, too small to judge): the max
absolute difference of each path's fp32 flow against the Hugging Face fp32 forward, and the mean /
max end-point difference of its bf16 and fp16 flow against its fp32 flow. TF32 is off, so fp32 is fp32.

Perceiver IO uses random weights of the published configuration (41M parameters, 2048 latents,
24 self-attention layers) unless --weights names a local snapshot; speed does not depend on the
weights' values.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import time

import numpy as np
import torch

from ssp.flow.estimators import FLOW_SCALE_FACTOR, DISFlow, FarnebackFlow, PerceiverFlow, image_patches

PUBLISHED = dict(num_latents=2048, d_latents=512, d_model=322, num_blocks=1, num_self_attends_per_block=24,
                 num_self_attention_heads=16, num_cross_attention_heads=1, train_size=[368, 496])
SMALL = dict(PUBLISHED, num_latents=256, num_self_attends_per_block=4)
CPU = dict(PUBLISHED, num_latents=64, d_latents=128, num_self_attends_per_block=1, num_self_attention_heads=4)
TINY = dict(PUBLISHED, num_latents=32, d_latents=64, num_self_attends_per_block=1, num_self_attention_heads=2,
            train_size=[48, 64])   # for the smoke test of this script (tests/test_benchmarks.py)
CONFIGS = {"published": PUBLISHED, "small": SMALL, "cpu": CPU, "tiny": TINY}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def perceiver_model(kind: str, weights: str | None):
    from transformers import PerceiverConfig, PerceiverForOpticalFlow

    if weights:
        return PerceiverForOpticalFlow.from_pretrained(weights, local_files_only=True)
    torch.manual_seed(0)
    return PerceiverForOpticalFlow(PerceiverConfig(**CONFIGS[kind]))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, warmup, n_pairs: int) -> float:
    warmup()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return n_pairs / (time.perf_counter() - t)


def hf_per_pair_loop(model, device, first, second):
    """The obvious baseline: one pair, one tile-sized forward at a time (frames resized to the tile)."""
    import cv2

    th, tw = model.config.train_size
    for a, b in zip(first, second):
        a, b = (cv2.resize(x, (tw, th)) for x in (a, b))
        x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float().to(device) / 255 * 2 - 1
        with torch.inference_mode():
            model(inputs=image_patches(x).unsqueeze(0)).logits.cpu() * FLOW_SCALE_FACTOR


def load_frames(path: str | None, size: tuple[int, int], n: int) -> tuple[np.ndarray, str]:
    """n + 1 consecutive real frames resized to ``size`` (or random ones), and where they came from."""
    import cv2

    h, w = size
    if path is None:
        rng = np.random.default_rng(1)
        return rng.integers(0, 255, (n + 1, h, w, 3), dtype=np.uint8), "random pixels"
    if path.endswith(".npz"):
        frames = np.load(path)["frames"]
    else:
        import decord

        vr = decord.VideoReader(path)
        frames = vr.get_batch(list(range(0, min(len(vr), 4 * (n + 1)), 4))).asnumpy()
    frames = frames[:n + 1]
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]), path


def scale_to_pixels(model, probe: PerceiverFlow, first, second, target_px: float) -> float:
    """Scale the decoder's 2-channel output layer so the flows are about ``target_px`` on average."""
    mean = float(np.abs(probe.pairs(first[:1], second[:1])).mean())
    factor = target_px / max(mean, 1e-6)
    with torch.no_grad():
        for mod in model.perceiver.decoder.modules():
            if isinstance(mod, torch.nn.Linear) and mod.out_features == 2:
                mod.weight.mul_(factor)
                mod.bias.mul_(factor)
    return factor


def equality(args, kind_model, device, machine) -> None:
    size = tuple(map(int, args.sizes[0].split("x")))
    frames, source = load_frames(args.frames, size, args.equality_pairs)
    first, second = frames[:-1], frames[1:]
    eager = PerceiverFlow(None, model=kind_model, device=device, attention="eager", batch_size=4)
    factor = scale_to_pixels(kind_model, eager, first, second, args.target_px)
    ref = eager.pairs(first, second)
    row = {"figure": "flow_equality", "size": args.sizes[0], "frames": source, "pairs": len(first),
           "output_scale": round(factor, 2), "mean_abs_flow_px": round(float(np.abs(ref).mean()), 3),
           "max_abs_flow_px": round(float(np.abs(ref).max()), 3), "device": machine}
    for att in args.attentions:
        fast = PerceiverFlow(None, model=copy.deepcopy(kind_model), device=device, attention=att, batch_size=16)
        f32 = fast.pairs(first, second)
        row[f"{att}_fp32_vs_hf_fp32_max_abs_px"] = float(f"{np.abs(f32 - ref).max():.3g}")
        for name in ("bfloat16", "float16"):
            if device == "cpu" and name == "float16":
                continue
            fast.dtype = DTYPES[name]
            epe = np.sqrt(((fast.pairs(first, second) - f32) ** 2).sum(-1))
            row[f"{att}_{name}_vs_fp32_epe_mean_px"] = float(f"{epe.mean():.3g}")
            row[f"{att}_{name}_vs_fp32_epe_max_px"] = float(f"{epe.max():.3g}")
    print(json.dumps(row), flush=True)


def breakdown(pf: PerceiverFlow, first, second, label: str, machine: str) -> None:
    """Milliseconds per pair in each part of the Perceiver IO forward, for one batch of ``pf``."""
    inner = pf.model.perceiver
    parts = {"input_preprocessor": [inner.input_preprocessor], "encoder_cross_attention": [inner.encoder.cross_attention],
             "latent_self_attention": list(inner.encoder.self_attends), "decoder": [inner.decoder]}
    spans: dict[str, list] = {k: [] for k in parts}
    cuda = torch.cuda.is_available()

    def stamp():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed_ms(a, b):
        return a.elapsed_time(b) if cuda else (b - a) * 1e3

    handles = []
    for name, mods in parts.items():
        for mod in mods:
            handles.append(mod.register_forward_pre_hook(lambda *_, name=name: spans[name].append([stamp()])))
            handles.append(mod.register_forward_hook(lambda *_, name=name: spans[name][-1].append(stamp())))
    n = pf.batch_size
    pf.pairs(first[:n], second[:n])          # warm
    for v in spans.values():
        v.clear()
    start = stamp()
    pf.pairs(first[:n], second[:n])
    end = stamp()
    sync()
    for h in handles:
        h.remove()
    row = {"figure": "flow_breakdown_ms_per_pair", "backend": label, "size": f"{first.shape[1]}x{first.shape[2]}",
           "total": round(elapsed_ms(start, end) / n, 2)}
    row.update({k: round(sum(elapsed_ms(a, b) for a, b in v) / n, 2) for k, v in spans.items()})
    row["other"] = round(row["total"] - sum(row[k] for k in spans), 2)
    row["device"] = machine
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4, help="pairs per measurement of our path (Perceiver IO)")
    ap.add_argument("--hf-pairs", type=int, help="pairs per measurement of the Hugging Face forward (default --pairs)")
    ap.add_argument("--cv-pairs", type=int, default=32, help="pairs per measurement (OpenCV)")
    ap.add_argument("--perceiver-config", choices=list(CONFIGS), default="published",
                    help="published = 41M parameters; small / cpu = cut-down configs for CPU figures; "
                         "tiny = 48x64 tiles, for smoke tests")
    ap.add_argument("--sizes", nargs="+", default=["368x496", "224x224"], help="frame sizes HxW")
    ap.add_argument("--weights", help="local Perceiver IO snapshot instead of random weights")
    ap.add_argument("--hf-batch-sizes", type=int, nargs="*", default=[1, 4], help="tiles per forward, Hugging Face")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="tiles per forward, our path")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32"], help="our paths' precisions")
    ap.add_argument("--attentions", nargs="+", choices=["sdpa", "folded"], default=["sdpa", "folded"],
                    help="our paths (flow.perceiver.attention)")
    ap.add_argument("--skip-opencv", action="store_true")
    ap.add_argument("--skip-loop", action="store_true", help="leave out the per-pair loop")
    ap.add_argument("--skip-perceiver", action="store_true")
    ap.add_argument("--frames", help="real frames for the accuracy figures: a video or an .npz")
    ap.add_argument("--equality-pairs", type=int, default=4)
    ap.add_argument("--target-px", type=float, default=5.0)
    ap.add_argument("--skip-equality", action="store_true")
    ap.add_argument("--breakdown", action="store_true",
                    help="time the parts of the forward (preprocessing, attentions, decoder) for each size")
    args = ap.parse_args()
    hf_pairs = args.hf_pairs or args.pairs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"
    machine = torch.cuda.get_device_name(0) if device == "cuda" else cpu
    torch.backends.cudnn.allow_tf32 = False   # fp32 means fp32 (the matmul default is already full precision)
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    if device == "cpu":
        print(json.dumps({"note": "no GPU here: CPU figures; the 100 pairs/s goal is for one H100"}), flush=True)
    model, fast_models = None, {}
    if not args.skip_perceiver:
        model = perceiver_model(args.perceiver_config, args.weights).to(device).eval()
        # one copy per path: PerceiverFlow(attention=...) patches its model in place
        fast_models = {att: copy.deepcopy(model) for att in args.attentions}
        if not args.skip_equality:
            equality(args, copy.deepcopy(model), device, machine)
    for h, w in (tuple(map(int, size.split("x"))) for size in args.sizes):
        n_max = max(args.cv_pairs, args.pairs, hf_pairs)
        a, b = (rng.integers(0, 255, (n_max, h, w, 3), dtype=np.uint8) for _ in range(2))
        rows = [] if args.skip_opencv else [("dis-medium", lambda: DISFlow("medium"), args.cv_pairs, 1),
                                            ("dis-fast", lambda: DISFlow("fast"), args.cv_pairs, 1),
                                            ("farneback", FarnebackFlow, args.cv_pairs, 1)]
        if model is not None:
            for bs in args.hf_batch_sizes:
                rows.append((f"hf-eager-fp32-bs{bs}", lambda bs=bs: PerceiverFlow(
                    None, model=model, batch_size=bs, device=device, attention="eager"), hf_pairs, bs))
            for att, dtype, bs in itertools.product(args.attentions, args.dtypes, args.batch_sizes):
                rows.append((f"{att}-{dtype}-bs{bs}", lambda bs=bs, dtype=dtype, att=att: PerceiverFlow(
                    None, model=fast_models[att], batch_size=bs, device=device, attention=att, dtype=dtype),
                    args.pairs, bs))
        for name, make, n, bs in rows:
            row = {"figure": "flow_pairs_per_s", "backend": name, "config": args.perceiver_config, "size": f"{h}x{w}",
                   "pairs": n, "device": machine}
            try:
                est = make()
                # warm-up: one forward of the same batch size (kernel selection, allocator)
                rate = timed(lambda: est.pairs(a[:n], b[:n]), lambda: est.pairs(a[:bs], b[:bs]), n)
                row["pairs_per_s"] = round(rate, 3)
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            if device == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            print(json.dumps(row), flush=True)
        if model is not None and args.breakdown:
            for label, attention, mdl, dtype in [("hf-eager-fp32-bs4", "eager", model, "float32")] + [
                    (f"{att}-{args.dtypes[-1]}-bs{max(args.batch_sizes)}", att, fast_models[att], args.dtypes[-1])
                    for att in args.attentions]:
                bs = 4 if attention == "eager" else max(args.batch_sizes)
                try:
                    breakdown(PerceiverFlow(None, model=mdl, batch_size=bs, device=device, attention=attention,
                                            dtype=dtype), a, b, label, machine)
                except torch.OutOfMemoryError:
                    print(json.dumps({"figure": "flow_breakdown_ms_per_pair", "backend": label, "error": "out of memory"}))
                if device == "cuda":
                    torch.cuda.empty_cache()
        if model is not None and not args.skip_loop:
            n = hf_pairs
            rate = timed(lambda: hf_per_pair_loop(model, device, a[:n], b[:n]),
                         lambda: hf_per_pair_loop(model, device, a[:1], b[:1]), n)
            print(json.dumps({"figure": "flow_pairs_per_s", "backend": "hf-per-pair-loop", "config": args.perceiver_config,
                              "size": f"{h}x{w}", "pairs": n, "pairs_per_s": round(rate, 3), "device": machine,
                              "note": "frames resized to one tile, no tiling"}), flush=True)


if __name__ == "__main__":
    main()
