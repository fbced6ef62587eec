"""Metrics exactly as AVSBench computes them (../shared/AVSBENCH.md, section 4).

Binary (S4, MS3), per batch (the reference tests one video per batch):
  mIoU: p = sigmoid(logit) > 0.5 (here: probability > 0.5). Per frame: empty ground truth ->
  inter = #(p == 0 and g == 0), union = H*W; else inter = #(p and g), union = #(p or g).
  Batch value = mean over frames of inter / (union + 1e-7).
  F-score: 255 thresholds linspace(0, 1 - 1e-10, 255); per frame with a non-empty ground truth
  P_k = TP_k / (#(s >= t_k) + 1e-20), R_k = TP_k / (#g + 1e-20), F_k = 1.3 P R / (0.3 P + R),
  NaN -> 0; mean over those frames, max over k. A batch with no non-empty frame scores 0.
Semantic (AVSS): per class, accumulated over all frames; mean over all 71 classes.
"""
from __future__ import annotations

import numpy as np

THRESHOLDS = np.linspace(0, 1 - 1e-10, 255)
EPS_SEMANTIC = 2.220446049250313e-16


def binary_miou_batch(scores: np.ndarray, gt: np.ndarray) -> float:
    """[N, H, W] foreground probabilities and {0, 1} ground truth -> the batch's mIoU."""
    pred = scores > 0.5
    gt = gt.astype(bool)
    vals = []
    for p, g in zip(pred, gt):
        if not g.any():
            inter, union = np.sum(~p & ~g), g.size
        else:
            inter, union = np.sum(p & g), np.sum(p | g)
        vals.append(inter / (union + 1e-7))
    return float(np.mean(vals))


def binary_fscore_batch(scores: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """[N, H, W] probabilities -> the batch's F-score (max over thresholds of the mean over frames)."""
    gt = gt.astype(bool)
    frames = [(s, g) for s, g in zip(scores, gt) if g.any()]
    if not frames:
        return 0.0
    fs = np.zeros(len(THRESHOLDS))
    for s, g in frames:
        s = s.astype(np.float64).ravel()
        gflat = g.ravel()
        above = s[:, None] >= THRESHOLDS[None, :]                   # [HW, 255]
        tp = (above & gflat[:, None]).sum(0)
        prec = tp / (above.sum(0) + 1e-20)
        rec = tp / (gflat.sum() + 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
        fs += np.nan_to_num(f, nan=0.0)
    return float((fs / len(frames)).max())


class SemanticAccumulator:
    """AVSS mIoU and F-score: per-class sums over frames, then the mean over all classes."""

    def __init__(self, num_classes: int = 71):
        self.n = num_classes
        self.iou = np.zeros(num_classes)
        self.f = np.zeros(num_classes)
        self.count = np.zeros(num_classes)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """One frame: [H, W] predicted and true class indices."""
        for c in range(self.n):
            p, g = pred == c, gt == c
            i, pc, gc = np.sum(p & g), np.sum(p), np.sum(g)
            u = pc + gc - i
            self.iou[c] += i / (u + EPS_SEMANTIC)
            with np.errstate(invalid="ignore", divide="ignore"):
                prec, rec = np.float64(i) / pc, np.float64(i) / gc
                f = 1.3 * prec * rec / (0.3 * prec + rec)
            self.f[c] += 0.0 if np.isnan(f) else f
            self.count[c] += u > 0

    def result(self, exclude: int | None = None) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            miou = np.nan_to_num(self.iou / self.count)
            f = np.nan_to_num(self.f / self.count)
        keep = [c for c in range(self.n) if c != exclude]
        return {"miou": float(miou[keep].mean()), "fscore": float(f[keep].mean()),
                "per_class_miou": miou.tolist(), "per_class_fscore": f.tolist()}
