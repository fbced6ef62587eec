"""Tables like the paper's Table 2: one row per variant, mIoU and F-score per task and split."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .model.ssp import VARIANTS, parse_variant

REFERENCE_COLUMNS = ("variant", "task", "split", "miou", "fscore")


def read_reference(path: str | Path) -> dict[tuple[str, str, str], dict]:
    """Published figures (studies.reference): (variant, task, split) -> {miou, fscore, source} in %."""
    out = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(REFERENCE_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {', '.join(REFERENCE_COLUMNS)}")
        for n, row in enumerate(reader, start=2):
            try:
                parse_variant(row["variant"])
                key = (row["variant"], row["task"], row["split"])
                out[key] = {"miou": float(row["miou"]), "fscore": float(row["fscore"]),
                            "source": (row.get("source") or "").strip()}
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}, line {n}: {e}") from e
    return out


def ablation_table(metric_files, variants, md_path, csv_path, reference: str | Path | None = None,
                   note: str = "") -> list[dict]:
    """One row per variant; with ``reference``, the published figures beside ours ("ref." columns);
    ``note``, if any, is printed under the table."""
    results = {}
    for f in map(Path, metric_files):
        r = json.loads(f.read_text())
        results[(f.parent.name, r["task"], r["split"])] = r
    ref = read_reference(reference) if reference else {}
    ref = {k: v for k, v in ref.items() if k[0] in variants}
    ref_columns = {k[1:] for k in ref}
    columns = sorted({k[1:] for k in results} | ref_columns, key=lambda c: (c[0], c[1] != "val"))
    rows = []
    for v in variants:
        preset, extra = parse_variant(v)
        sw = VARIANTS[preset]
        row = {"variant": v, "pre-mask": "✓" if sw.premask else "", "post-mask": "✓" if sw.postmask else "",
               "text": {"none": "", "att": "att", "vta": "VTA"}[sw.text]}
        if extra:
            row["study"] = ", ".join(f"{k}={val}" for k, val in extra.items())
        for t, s in columns:
            r, p = results.get((v, t, s)), ref.get((v, t, s))
            for name, key in (("mIoU", "miou"), ("F", "fscore")):
                row[f"{t} {s} {name}"] = f"{100 * r[key]:.2f}" if r else ""
                if (t, s) in ref_columns:
                    row[f"{t} {s} {name} (ref.)"] = f"{p[key]:.2f}" if p else ""
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
    text = ("\nmIoU and F-score in %, AVSBench protocol (one video per batch). Test-time pre-mask: "
            "the stage-1 (baseline) prediction stands in for the ground truth, as train.premask_test says.\n")
    if ref:
        sources = sorted({p["source"] for p in ref.values() if p["source"]})
        text += (f"\n(ref.) columns: published figures from {reference}"
                 + (f" ({'; '.join(sources)})" if sources else "") + ", not measured by this run.\n")
    if note:
        text += f"\nNote: {note}\n"
    Path(md_path).write_text("\n".join(lines) + "\n" + text)
    return rows
