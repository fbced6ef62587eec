"""The AVSBench metrics written out as ../shared/AVSBENCH.md states them: every pixel against every
threshold, class by class. ``ssp.evaluation.metrics`` counts the same things with histograms; the tests
require identical numbers, and ``benchmarks/metrics.py`` times both."""
import numpy as np


def reference_fscore(scores, gt, beta2=0.3):
    """[N, H, W] probabilities and truth -> the batch's F-score."""
    from ssp.evaluation.metrics import THRESHOLDS

    frames = [(s, g) for s, g in zip(scores, gt.astype(bool)) if g.any()]
    if not frames:
        return 0.0
    fs = np.zeros(len(THRESHOLDS))
    for s, g in frames:
        above = s.astype(np.float64).ravel()[:, None] >= THRESHOLDS[None, :]      # [HW, 255]
        tp = (above & g.ravel()[:, None]).sum(0)
        prec, rec = tp / (above.sum(0) + 1e-20), tp / (g.sum() + 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            fs += np.nan_to_num((1 + beta2) * prec * rec / (beta2 * prec + rec), nan=0.0)
    return float((fs / len(frames)).max())


def reference_semantic(pairs, n):
    """(prediction, truth) class maps -> per-class IoU and F sums, and frames counted."""
    iou, f, count = np.zeros(n), np.zeros(n), np.zeros(n)
    for pred, gt in pairs:
        for c in range(n):
            p, g = pred == c, gt == c
            i, pc, gc = np.sum(p & g), np.sum(p), np.sum(g)
            u = pc + gc - i
            iou[c] += i / (u + 2.220446049250313e-16)
            with np.errstate(invalid="ignore", divide="ignore"):
                prec, rec = np.float64(i) / pc, np.float64(i) / gc
                fc = 1.3 * prec * rec / (0.3 * prec + rec)
            f[c] += 0.0 if np.isnan(fc) else fc
            count[c] += u > 0
    return iou, f, count
