"""Scoring speed: the AVSBench metrics as ``ssp.evaluation.metrics`` counts them (histograms) against the
same metrics written out as defined (every pixel against every threshold, class by class;
``tests/references/metrics.py``), on the same random inputs. Prints JSON lines.

    .venv/bin/python benchmarks/metrics.py [--size 224] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from references.metrics import reference_fscore, reference_semantic

from ssp.evaluation.metrics import SemanticAccumulator, binary_fscore_batch


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="frame side (AVSBench ground truth: 224)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each; the fastest is reported")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    S, machine = args.size, f"{platform.machine()} CPU"
    scores = rng.random((5, S, S)).astype(np.float32)
    gt = rng.random((5, S, S)) > 0.7
    ours, ref = binary_fscore_batch(scores, gt), reference_fscore(scores, gt)
    assert ours == ref, (ours, ref)
    print(json.dumps({"figure": "fscore_ms_per_video", "frames": 5, "size": S, "machine": machine,
                      "histogram": round(best_ms(lambda: binary_fscore_batch(scores, gt), args.repeats), 2),
                      "pixel_by_threshold": round(best_ms(lambda: reference_fscore(scores, gt), args.repeats), 2)}),
          flush=True)
    pred = rng.integers(0, 71, (S, S)).astype(np.uint8)
    truth = np.where(rng.random((S, S)) < 0.5, pred, rng.integers(0, 71, (S, S))).astype(np.uint8)
    print(json.dumps({"figure": "avss_counts_ms_per_frame", "classes": 71, "size": S, "machine": machine,
                      "histogram": round(best_ms(lambda: SemanticAccumulator(71).add(pred, truth), args.repeats), 3),
                      "class_by_class": round(best_ms(lambda: reference_semantic([(pred, truth)], 71), args.repeats), 3)}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
