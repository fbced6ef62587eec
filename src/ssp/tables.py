"""Tables like the paper's Table 2: one row per variant, mIoU and F-score per task and split."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .model.ssp import VARIANTS, parse_variant


def ablation_table(metric_files, variants, md_path, csv_path) -> list[dict]:
    results = {}
    for f in map(Path, metric_files):
        r = json.loads(f.read_text())
        results[(f.parent.name, r["task"], r["split"])] = r
    columns = sorted({(t, s) for _, t, s in results}, key=lambda c: (c[0], c[1] != "val"))
    rows = []
    for v in variants:
        preset, extra = parse_variant(v)
        sw = VARIANTS[preset]
        row = {"variant": v, "pre-mask": "✓" if sw.premask else "", "post-mask": "✓" if sw.postmask else "",
               "text": {"none": "", "att": "att", "vta": "VTA"}[sw.text]}
        if extra:
            row["study"] = ", ".join(f"{k}={val}" for k, val in extra.items())
        for t, s in columns:
            r = results.get((v, t, s))
            row[f"{t} {s} mIoU"] = f"{100 * r['miou']:.2f}" if r else ""
            row[f"{t} {s} F"] = f"{100 * r['fscore']:.2f}" if r else ""
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r)) if rows else ["variant"]
    for r in rows:
        for k in keys:
            r.setdefault(k, "")
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    note = ("\nmIoU and F-score in %, AVSBench protocol (one video per batch). Test-time pre-mask: "
            "the stage-1 (baseline) prediction stands in for the ground truth, as train.premask_test says.\n")
    Path(md_path).write_text("\n".join(lines) + "\n" + note)
    return rows
