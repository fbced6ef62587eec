"""Tables like the paper's: Table 2 (one row per variant, mIoU and F-score per task and split of one
run) and Table 1 (one row per variant or published method, one column pair per setting, S4, MS3
and AVSS, each read from the run that scored it)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ssp.io.files import atomic_path, write_text
from ssp.layout import RunLayout
from ssp.variants import VARIANTS, parse_variant

REFERENCE_COLUMNS = ("variant", "task", "split", "miou", "fscore")
SETTINGS = {"s4": "S4", "ms3": "MS3", "avss": "AVSS"}


def _shown(path: str | Path) -> str:
    """A reference file as a table names it: relative to the working folder where it lies below it
    (configs/published/ssp-paper.csv), not the checkout's absolute path."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_reference(path: str | Path) -> dict[tuple[str, str, str], dict]:
    """Published figures (studies.reference): (name, task, split) -> {miou, fscore, source, ours} in %.

    A row names one of our variants (``variant``: baseline, ..., full; a typo is an error), or,
    in an optional ``method`` column with ``variant`` left empty, another method (Table 1 only)."""
    out = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(REFERENCE_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {', '.join(REFERENCE_COLUMNS)}"
                             " (and optionally source, method)")
        for n, row in enumerate(reader, start=2):
            try:
                variant, method = (row["variant"] or "").strip(), (row.get("method") or "").strip()
                if bool(variant) == bool(method):
                    raise ValueError("give either a variant of ours or another method's name, not both or neither")
                if variant:
                    parse_variant(variant)
                key = (variant or method, row["task"], row["split"])
                out[key] = {"miou": float(row["miou"]), "fscore": float(row["fscore"]),
                            "source": (row.get("source") or "").strip(), "ours": bool(variant)}
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}, line {n}: {e}") from e
    return out


def _write(rows: list[dict], md_path, csv_path, text: str) -> None:
    """``rows`` as CSV and as a markdown table followed by ``text``."""
    keys = list(dict.fromkeys(k for r in rows for k in r)) if rows else ["variant"]
    for r in rows:
        for k in keys:
            r.setdefault(k, "")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    write_text(md_path, "\n".join(lines) + "\n" + text)


def ablation_table(metric_files, variants, md_path, csv_path, reference: str | Path | None = None,
                   note: str = "") -> list[dict]:
    """One row per variant; with ``reference``, the published figures beside ours ("ref." columns);
    ``note``, if any, is printed under the table."""
    results = {}
    for f in map(Path, metric_files):
        r = json.loads(f.read_text())
        results[(f.parent.name, r["task"], r["split"])] = r
    ref = read_reference(reference) if reference else {}
    ref = {k: v for k, v in ref.items() if v["ours"] and k[0] in variants}
    ref_columns = {k[1:] for k in ref}
    columns = sorted({k[1:] for k in results} | ref_columns, key=lambda c: (c[0], c[1] != "val"))
    rows, with_epochs = [], any("model_epoch" in r for r in results.values())
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
        if with_epochs:   # the training epoch the trained model holds (the same in every column, as one model)
            row["epoch"] = "/".join(sorted({str(r["model_epoch"]) for k, r in results.items()
                                            if k[0] == v and "model_epoch" in r}, key=int))
        rows.append(row)
    protocols = {t: _miou_protocol(r) for (_, t, _), r in sorted(results.items())}
    fscores = sorted({r["fscore_protocol"] for r in results.values() if r.get("fscore_protocol")})
    text = ("\nmIoU and F-score in %" + "".join(f"; {SETTINGS[t]} mIoU protocol: {p}" for t, p in protocols.items() if p)
            + "".join(f"; F-score: {FSCORE_NAMES.get(f, f)}" for f in fscores)
            + ". Test-time pre-mask: train.premask_test's stand-in for the ground truth (a -pt<choice> row: "
            "that choice's)."
            + (" epoch: the training epoch each model is (train.select: its best validation epoch, or its "
               "last)." if with_epochs else "") + "\n")
    if ref:
        sources = sorted({p["source"] for p in ref.values() if p["source"]})
        text += (f"\n(ref.) columns: published figures from {_shown(reference)}"
                 + (f" ({'; '.join(sources)})" if sources else "") + ", not measured by this run.\n")
    if note:
        text += f"\nNote: {note}\n"
    _write(rows, md_path, csv_path, text)
    return rows


def run_metric_files(run: str | Path, variants, split: str = "test") -> list[Path]:
    """A finished run's ``metrics/<variant>/<task>_<split>.json`` for the given variants; none is an
    error that says to run that setting first."""
    layout = RunLayout.at(run)
    files = sorted(f for v in variants for f in layout.metrics_dir(v).glob(f"*_{split}.json")
                   if f.stem.rsplit("_", 1)[0] in SETTINGS)
    if not files:
        which = f"for {', '.join(variants)}" if variants else "for any variant"
        where = "" if Path(run).is_dir() else " (the folder does not exist)"
        raise FileNotFoundError(f"{run}: no metrics/<variant>/<task>_{split}.json {which}{where}; "
                                "run that setting's config first (its snakemake run scores the variants)")
    return files


def run_variants(runs) -> list[str]:
    """The variants scored in any of ``runs``, in Table 2's order (study variants after)."""
    found = {d.name for run in runs for d in RunLayout.at(run).metrics_dir("*").parent.glob("*") if d.is_dir()}
    return [v for v in VARIANTS if v in found] + sorted(found - set(VARIANTS))


def settings_table(metric_files, variants, md_path, csv_path, *, split: str = "test",
                   reference: str | Path | None = None) -> list[dict]:
    """Table 1: a row per variant (measured), then the published rows of ``reference``; mIoU and F
    per setting. Each metrics file is ``<run>/metrics/<variant>/<task>_<split>.json``; a setting
    scored by two runs is an error (list one of them)."""
    measured, runs, protocols = {}, {}, {}
    for f in map(Path, metric_files):
        r = json.loads(f.read_text())
        if r["split"] != split or f.parent.name not in variants:
            continue
        run, task = f.parents[2], r["task"]
        if runs.setdefault(task, run) != run:
            raise ValueError(f"{SETTINGS[task]} is scored in two runs, {runs[task]} and {run}: list only one of them")
        measured[(f.parent.name, task)] = r
        protocols.setdefault(task, _miou_protocol(r))
    published = {k: v for k, v in (read_reference(reference) if reference else {}).items() if k[2] == split}
    tasks = [t for t in SETTINGS if t in runs or any(k[1] == t for k in published)]
    names = list(dict.fromkeys(k[0] for k in published))
    rows = [_settings_row(v, "measured", {t: measured.get((v, t)) for t in tasks}, scale=100) for v in variants]
    for name in names:
        entries = {t: published.get((name, t, split)) for t in tasks}
        sources = sorted({e["source"] for e in entries.values() if e and e["source"]})
        rows.append(_settings_row(name, "published" + (f" ({'; '.join(sources)})" if sources else ""), entries,
                                  scale=1))
    text = f"\nmIoU and F-score in %, {split} split.\n"
    for t in tasks:
        if t in runs:
            text += f"\n- {SETTINGS[t]}: measured in {runs[t]}" + (f"; mIoU protocol: {protocols[t]}" if protocols[t] else "") + "."
    if published:
        text += f"\n\nPublished rows: from {_shown(reference)}, not measured by this project.\n"
    _write(rows, md_path, csv_path, text + "\n")
    return rows


def _settings_row(name: str, figures: str, entries: dict, scale: float) -> dict:
    row = {"method": name, "figures": figures}
    for t, e in entries.items():
        row[f"{SETTINGS[t]} mIoU"] = f"{scale * e['miou']:.2f}" if e else ""
        row[f"{SETTINGS[t]} F"] = f"{scale * e['fscore']:.2f}" if e else ""
    return row


FSCORE_NAMES = {"aavs": "AAVS's, on sigmoid(2 s_sounding - s_background)",
                "avsbench": "AVSBench's, on the sounding share"}


def _miou_protocol(metrics: dict) -> str:
    """How a metrics.json's headline mIoU was computed, as it says itself."""
    return (metrics.get("protocols") or {}).get("miou", "")
