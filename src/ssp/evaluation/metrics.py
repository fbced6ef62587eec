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


def threshold_bins(scores: np.ndarray) -> np.ndarray:
    """How many of the thresholds each score reaches (``s >= t``), 0..255, flattened.

    The thresholds are evenly spaced, so a score's count is guessed by arithmetic and then
    checked against the thresholds on either side (the guess is off by one at most): the exact
    count, several times faster than a binary search. NaN reaches no threshold, as ``s >= t``
    says; the scores are compared in float64, as the reference does.
    """
    s = np.clip(np.nan_to_num(scores.astype(np.float64).ravel(), nan=-1.0), -1.0, 2.0)   # same thresholds reached
    n = len(THRESHOLDS)
    k = np.clip(np.floor(s * ((n - 1) / THRESHOLDS[-1])), -1, n - 1).astype(np.int64) + 1
    k -= (k > 0) & (THRESHOLDS[np.maximum(k - 1, 0)] > s)
    k += (k < n) & (THRESHOLDS[np.minimum(k, n - 1)] <= s)
    return k


def _reaching(bins: np.ndarray) -> np.ndarray:
    """[255]: how many of the pixels with these ``threshold_bins`` reach each threshold."""
    n = len(THRESHOLDS)
    return np.cumsum(np.bincount(bins, minlength=n + 1)[::-1])[::-1][1:]


def fscore_curves(scores: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> np.ndarray:
    """[N, H, W] probabilities -> [M, 255]: F at every threshold for each of the M frames whose
    ground truth is not empty.

    Counts per threshold come from one histogram of the scores over the thresholds: a pixel that
    reaches exactly the first ``i`` thresholds (``threshold_bins``) counts for every k < i. They
    are the integers that comparing every pixel with every threshold gives, and the same
    arithmetic follows, so the values are identical, over 20x faster than the [H*W, 255]
    comparison.
    """
    gt = gt.astype(bool)
    curves = []
    for s, g in zip(scores, gt):
        if not g.any():
            continue
        bins = threshold_bins(s)                                  # [HW] in 0..255
        above, tp = _reaching(bins), _reaching(bins[g.ravel()])   # [255]: #(s >= t_k), of them true
        prec = tp / (above + 1e-20)
        rec = tp / (g.sum() + 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
        curves.append(np.nan_to_num(f, nan=0.0))
    return np.asarray(curves).reshape(len(curves), len(THRESHOLDS))


def binary_fscore_batch(scores: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """[N, H, W] probabilities -> the batch's F-score (max over thresholds of the mean over frames)."""
    return fscore_of_curves(fscore_curves(scores, gt, beta2))


def fscore_of_curves(curves: np.ndarray) -> float:
    """The F-score of a batch from its frames' ``fscore_curves`` (0 for a batch with none)."""
    if not len(curves):
        return 0.0
    fs = np.zeros(curves.shape[1])
    for f in curves:                    # summed frame by frame, in order, as the reference does
        fs += f
    return float((fs / len(curves)).max())


class SemanticAccumulator:
    """AVSS mIoU and F-score: per-class sums over frames, then the mean over all classes."""

    def __init__(self, num_classes: int = 71):
        self.n = num_classes
        self.iou = np.zeros(num_classes)
        self.f = np.zeros(num_classes)
        self.count = np.zeros(num_classes)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """One frame: [H, W] predicted and true class indices (other values count for no class).
        Per class c: i = #(pred == c and gt == c), #(pred == c), #(gt == c), from three histograms."""
        n = self.n
        p, g = pred.ravel(), gt.ravel()
        p_in, g_in = (p >= 0) & (p < n), (g >= 0) & (g < n)
        i = np.bincount(p[p_in & (p == g)], minlength=n)[:n]
        pc, gc = np.bincount(p[p_in], minlength=n)[:n], np.bincount(g[g_in], minlength=n)[:n]
        u = pc + gc - i
        self.iou += i / (u + EPS_SEMANTIC)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec, rec = i.astype(np.float64) / pc, i.astype(np.float64) / gc
            f = 1.3 * prec * rec / (0.3 * prec + rec)
        self.f += np.where(np.isnan(f), 0.0, f)
        self.count += u > 0

    def result(self, exclude: int | None = None) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            miou = np.nan_to_num(self.iou / self.count)
            f = np.nan_to_num(self.f / self.count)
        keep = [c for c in range(self.n) if c != exclude]
        return {"miou": float(miou[keep].mean()), "fscore": float(f[keep].mean()),
                "per_class_miou": miou.tolist(), "per_class_fscore": f.tolist()}
