"""Training precision: the same run trained in fp32 and under bf16 autocast (``train.precision``),
side by side: each epoch's mean training loss and validation scores, the test scores of the kept
epoch, and the training time. On a CPU the bf16 run is PyTorch's CPU autocast (real bf16 matrix
products), so the figures show what bf16 does to the method's numbers, not a GPU's speed.

    .venv/bin/python benchmarks/precision.py [--config config.yaml] [--variant full] [--epochs N]

Needs a finished run of the config (``make demo``): its shards, and the baseline's val and test
predictions, which are the pre-mask's stand-in for M_GT (``train.premask_test: stage1``). Writes
under ``<run>/benchmarks/precision/`` and prints one JSON line per figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.config import load
from ssp.engine.jobs import run_prediction, run_training
from ssp.evaluation.scoring import evaluate
from ssp.layout import RunLayout


def epoch_rows(metrics_csv: Path) -> list[dict]:
    """Per epoch (1-based): the mean training loss and the validation figures, from metrics.csv."""
    m = pd.read_csv(metrics_csv)
    m["value"] = pd.to_numeric(m["value"], errors="coerce")   # val rows also hold names (val_premask)
    train = m[(m["kind"] == "train") & (m["name"] == "loss")].groupby("epoch")["value"].mean()
    val = m[m["kind"] == "val"].pivot_table(index="epoch", columns="name", values="value", aggfunc="last")
    rows = []
    for epoch, loss in train.items():
        v = val.loc[epoch + 1] if epoch + 1 in val.index else {}
        rows.append({"epoch": int(epoch) + 1, "train_loss": round(float(loss), 5),
                     **{k: round(float(v[k]) * 100, 2) for k in ("val_miou", "val_fscore") if k in v}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--variant", default="full")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--epochs", type=int, help="fewer epochs than the config's (the smoke test)")
    args = ap.parse_args()
    base = load(args.config)
    layout = RunLayout.of(base)
    stage1 = {s: layout.predictions("baseline", s) for s in ("val", "test")}
    missing = [str(p) for p in (layout.manifest, *stage1.values()) if not p.exists()]
    if missing:
        sys.exit(f"benchmarks/precision.py needs a finished run of {args.config} (make demo): missing {missing}")
    captions = sorted(layout.stage_dir("captions").glob("*.jsonl"))
    task = "avss" if base.train.task == "semantic" else ("s4" if {"v1s", "s4"} & set(base.train.subsets) else "ms3")
    machine = {"machine": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    for precision in args.precisions:
        changes = {"precision": precision, **({"epochs": args.epochs} if args.epochs else {})}
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, **changes))
        out = layout.benchmark("precision", precision)
        if (out / "checkpoint.pt").exists():
            (out / "checkpoint.pt").unlink()          # a fresh run each time
        start = time.perf_counter()
        model = run_training(cfg, args.variant, out, captions_files=captions, stage1_val=stage1["val"])
        seconds = time.perf_counter() - start
        for row in epoch_rows(out / "metrics.csv"):
            print(json.dumps({"figure": "precision_epoch", "precision": precision, "variant": args.variant, **row}))
        predictions = out / "test.h5"
        run_prediction(cfg, args.variant, "test", model, predictions, captions_files=captions, stage1=stage1["test"])
        result = evaluate(task, cfg.dataset_root, predictions, "test", fscore=cfg.evaluate.fscore)
        print(json.dumps({"figure": "precision_test", "precision": precision, "variant": args.variant,
                          "test_miou": round(result["miou"] * 100, 2), "test_fscore": round(result["fscore"] * 100, 2),
                          "epoch_kept": result.get("model_epoch"), "train_seconds": round(seconds, 1), **machine}))


if __name__ == "__main__":
    main()
