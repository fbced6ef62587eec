"""Figures: qualitative sheets like the paper's Fig. 8, training curves, and the studies' plots (Fig. 5, 7)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ssp.flow.mask import flow_to_color
from ssp.io.files import atomic_path
from ssp.io.store import ShardReader, binary_masks
from ssp.model.premask import premask_for_test

COLUMNS = ("frame", "flow", "M_O", "M_Pre", "prediction", "truth")


def _tile(img: np.ndarray | None, size: int) -> np.ndarray:
    """A cell of the sheet; ``None`` (no ground truth for the frame) is a grey cell saying so."""
    if img is None:
        cell = Image.new("RGB", (size, size), (200, 200, 200))
        ImageDraw.Draw(cell).text((4, size // 2 - 6), "no mask", fill="black")
        return np.asarray(cell)
    if img.ndim == 2:
        img = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    return np.asarray(Image.fromarray(img.astype(np.uint8)).resize((size, size), Image.NEAREST))


def qualitative(videos: list[str], *, frames: ShardReader, flows: ShardReader, flow_masks: ShardReader,
                masks: ShardReader, predictions: ShardReader, stage1: ShardReader | None, premask_test: str,
                out: str | Path, size: int = 96, frame_index: int = 2) -> Path:
    """One row per video: frame / flow colour / M_O / test-time M_Pre / prediction / ground truth
    (a grey "no mask" cell where the frame has none, as in a folder of videos)."""
    import torch

    rows = []
    for vid in videos:
        t = min(frame_index, len(frames.read(vid, ("frames",))["frames"]) - 1)
        f = frames.read(vid, ("frames",))["frames"][t]
        fl = flows.read(vid)["flow"].astype(np.float32)
        mo = flow_masks.read(vid)["flow_mask"][t]
        s1 = torch.from_numpy(binary_masks(stage1, vid)[t]) if stage1 is not None else None
        mpre = premask_for_test(torch.from_numpy(mo), s1, premask_test if s1 is not None or premask_test != "stage1"
                                else "flow").numpy()
        pred = predictions.read(vid)
        p = pred["scores"][t] if "scores" in pred else (pred["labels"][t] > 0).astype(np.float32)
        m = masks.read(vid)
        gt = (m["labels"][t] > 0).astype(np.float32) if m["has_mask"][t] else None
        cells = [f, flow_to_color(fl[min(t, len(fl) - 1)]) if len(fl) else np.zeros_like(f), mo, mpre, p, gt]
        rows.append(np.concatenate([_tile(c, size) for c in cells], 1))
    header = Image.new("RGB", (size * len(COLUMNS), 16), "white")
    draw = ImageDraw.Draw(header)
    for k, name in enumerate(COLUMNS):
        draw.text((k * size + 2, 2), name, fill="black")
    sheet = np.concatenate([np.asarray(header)] + rows, 0)
    out = Path(out)
    with atomic_path(out, sync=False) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return out


def training_curves(metric_files: dict[str, str | Path], out: str | Path) -> Path:
    """Training loss per step and validation mIoU per epoch, one line per variant; a star on the
    best validation epoch (best.json beside metrics.csv: the trained model's under ``select: best_val``)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, path in metric_files.items():
        df = pd.read_csv(path)
        loss = df[(df["kind"] == "train") & (df["name"] == "loss")]
        ax1.plot(loss["step"], pd.to_numeric(loss["value"]).rolling(5, min_periods=1).mean(), label=name)
        val = df[(df["kind"] == "val") & (df["name"] == "val_miou")]
        line, = ax2.plot(val["epoch"], pd.to_numeric(val["value"]), marker="o", label=name)
        best = Path(path).with_name("best.json")
        b = json.loads(best.read_text()) if best.is_file() else {"val_miou": None}
        if b["val_miou"] is not None:
            ax2.plot([b["epoch"]], [b["val_miou"]], marker="*", markersize=14, color=line.get_color(), zorder=3)
    ax1.set(xlabel="step", ylabel="training loss (mean of 5)", yscale="log")
    ax2.set(xlabel="epoch (★: the best validation mIoU)", ylabel="validation mIoU (flow pre-mask at val)")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    return _save(fig, out)


def study_figure(table_csv: str | Path, study: str, out: str | Path, *, chosen_weight: float | None = None,
                 note: str = "", chosen_premask_test: str | None = None) -> Path:
    """A study's table as the paper plots it: mIoU and F against the post-mask weight lambda'_mask
    (``postmask_sweep``, Fig. 5; ``chosen_weight`` dashed), or per Q1 wording (``prompt_study``,
    Fig. 7), or per stand-in for M_GT at test (``premask_test_study``; the configured one starred);
    one panel per split, a line or bar group per task and metric."""
    import re
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssp.variants import parse_variant

    df = pd.read_csv(table_csv, dtype=str).fillna("")
    key = {"postmask_sweep": "postmask_weight", "prompt_study": "q1_variant", "premask_test_study": "premask_test"}[study]
    df["x"] = [parse_variant(v)[1][key] for v in df["variant"]]
    if study != "premask_test_study":   # that one keeps the study's order of stand-ins
        df = df.sort_values(["x", "variant"], kind="stable")
    series = [c for c in df.columns if re.fullmatch(r"\S+ (val|test) (mIoU|F)", c)]
    splits = list(dict.fromkeys(c.split()[1] for c in series))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        cols = [c for c in series if c.split()[1] == split]
        for k, c in enumerate(cols):
            y = pd.to_numeric(df[c], errors="coerce")
            label = f"{c.split()[0].upper()} {c.split()[2]}"
            if study == "postmask_sweep":
                ax.plot(df["x"], y, marker="o", label=label)
            else:
                width = 0.8 / len(cols)
                ax.bar(np.arange(len(df)) + (k - (len(cols) - 1) / 2) * width, y, width, label=label)
        if study == "postmask_sweep":
            if chosen_weight is not None:
                ax.axvline(chosen_weight, color="grey", linestyle="--", linewidth=1)
            ax.set(xlabel="post-mask weight λ'_mask")
        else:
            names = [f"Q1 ({x}) {'att' if parse_variant(v)[0] == 'full_att' else 'VTA'}" if study == "prompt_study"
                     else x + (" *" if x == chosen_premask_test else "") for x, v in zip(df["x"], df["variant"])]
            ax.set_xticks(np.arange(len(df)), names)
            ax.set_ylim(0, 1.3 * max(ax.get_ylim()[1], 1))   # room for the legend above the bars
        ax.set(title=f"{split} split", ylabel="%")
        ax.legend(fontsize=8, loc="upper left", ncol=2)
    if note:
        fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 150)), fontsize=6, va="bottom")
        fig.tight_layout(rect=(0, 0.12, 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    """A matplotlib figure to ``out`` at 100 dpi, then closed."""
    import matplotlib.pyplot as plt

    with atomic_path(out, sync=False) as tmp:
        fig.savefig(tmp, dpi=100, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(out)
