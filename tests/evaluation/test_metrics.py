"""AVSBench metrics on hand-made masks, with answers worked out by hand."""
import numpy as np
import pytest
from references.metrics import reference_fscore, reference_semantic

from ssp.evaluation.metrics import SemanticAccumulator, binary_fscore_batch, binary_miou_batch


def _frame(cells, shape=(4, 4)):
    a = np.zeros(shape, np.float32)
    for r, c in cells:
        a[r, c] = 1
    return a


def test_perfect_prediction():
    g = np.stack([_frame([(0, 0), (0, 1)]), _frame([(3, 3)])])
    assert binary_miou_batch(g, g) == pytest.approx(1.0, abs=1e-6)
    assert binary_fscore_batch(g, g) == pytest.approx(1.0, abs=1e-6)


def test_empty_ground_truth_frame():
    g = np.zeros((1, 4, 4))
    p = _frame([(0, 0), (1, 1)])[None]          # 2 false positives
    # IoU of the background: 14 correct of 16 pixels
    assert binary_miou_batch(p, g) == pytest.approx(14 / 16, abs=1e-6)
    # no non-empty frame in the batch: F = 0 (and the batch still counts)
    assert binary_fscore_batch(p, g) == 0.0


def test_all_background_prediction():
    g = _frame([(0, 0), (0, 1), (1, 0), (1, 1)])[None]   # 4 of 16 pixels
    p = np.zeros((1, 4, 4))
    assert binary_miou_batch(p, g) == 0.0
    # only threshold 0 keeps pixels (all 16): P = 4/16, R = 1 -> F = 1.3 * 0.25 / (0.3 * 0.25 + 1)
    assert binary_fscore_batch(p, g) == pytest.approx(1.3 * 0.25 / (0.075 + 1), rel=1e-9)


def test_mixed_batch_iou_and_f():
    g = np.stack([_frame([(0, 0), (0, 1)]), np.zeros((4, 4))])
    p = np.stack([_frame([(0, 0)]) * 0.9, np.zeros((4, 4))])
    # frame 1: inter 1, union 2 -> 0.5; frame 2 (empty truth, empty prediction): 16/16
    assert binary_miou_batch(p, g) == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)
    # F over the one non-empty frame: best threshold keeps the 0.9 pixel: P = 1, R = 0.5
    assert binary_fscore_batch(p, g) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5), rel=1e-6)


def test_semantic_class_that_never_occurs_and_padding():
    acc = SemanticAccumulator(num_classes=4)
    gt = np.array([[0, 1], [1, 2]])
    pred = np.array([[0, 1], [2, 2]])
    acc.add(pred, gt)
    r = acc.result()
    # class 0: 1/1; class 1: 1 / (1 + 2 - 1) = 0.5; class 2: 1 / (2 + 1 - 1) = 0.5; class 3 never occurs: 0
    assert r["per_class_miou"] == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert r["miou"] == pytest.approx(2.0 / 4)
    # class 1: P = 1, R = 1/2 -> F = 1.3 * 0.5 / 0.8; class 2: P = 1/2, R = 1 -> F = 1.3 * 0.5 / 1.15
    assert r["per_class_fscore"][1] == pytest.approx(1.3 * 0.5 / 0.8)
    assert r["per_class_fscore"][2] == pytest.approx(1.3 * 0.5 / 1.15)
    assert acc.result(exclude=0)["miou"] == pytest.approx(1.0 / 3)
    # padding frames (truth and prediction all background) raise only the background class
    blank = np.zeros((2, 2), int)
    acc.add(blank, blank)
    assert acc.result()["per_class_miou"] == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert acc.count.tolist() == [2, 1, 1, 0]


def test_fast_fscore_equals_the_pixel_by_threshold_definition():
    from ssp.evaluation.metrics import THRESHOLDS, fscore_curves, fscore_of_curves

    rng = np.random.default_rng(0)
    for trial in range(12):
        n, h, w = 1 + trial % 4, 17, 23
        scores = rng.random((n, h, w)).astype(np.float32)
        scores.ravel()[:60] = rng.choice(np.r_[THRESHOLDS, 0.0, 1.0, 0.5], 60)   # ties with thresholds
        if trial % 3 == 0:
            scores = np.round(scores * 4) / 4                                    # few distinct values
        gt = rng.random((n, h, w)) > rng.uniform(0.3, 0.95)
        if trial % 4 == 1:
            gt[0] = False                                                        # an empty frame
        assert binary_fscore_batch(scores, gt) == reference_fscore(scores, gt), trial
        per_frame = [fscore_of_curves(fscore_curves(scores[i:i + 1], gt[i:i + 1])) for i in range(n)]
        assert per_frame == [reference_fscore(scores[i:i + 1], gt[i:i + 1]) for i in range(n)]
    assert binary_fscore_batch(np.ones((2, 3, 3), np.float32), np.zeros((2, 3, 3), bool)) == 0.0


def test_threshold_counts_are_exact_at_ties_and_odd_values():
    """Every score against every threshold, in float64: exact ties, their neighbours, and values
    a probability should not take (NaN reaches no threshold, as `s >= t` says)."""
    from ssp.evaluation.metrics import THRESHOLDS, threshold_bins

    t = THRESHOLDS
    s = np.r_[t, np.nextafter(t, -1), np.nextafter(t, 2), -0.0, 1.0, 2.0, -1.0, np.nan, np.inf, -np.inf,
              np.random.default_rng(2).random(1000)]
    with np.errstate(invalid="ignore"):
        want = (s[:, None] >= t[None, :]).sum(1)
    assert threshold_bins(s).tolist() == want.tolist()
    g = np.ones((1, 1, len(s)), bool)
    assert binary_fscore_batch(s[None, None], g) == reference_fscore(s[None, None], g)


def test_fast_semantic_accumulator_equals_the_class_by_class_definition():
    rng = np.random.default_rng(1)
    n = 9
    pairs = []
    for k in range(20):
        pred = rng.integers(0, n, (11, 13)).astype(np.uint8)
        gt = np.where(rng.random((11, 13)) < 0.6, pred, rng.integers(0, n, (11, 13))).astype(np.uint8)
        if k % 5 == 0:
            gt[:3] = 255                                                         # values of no class
            pred[-2:] = 200
        pairs.append((pred, gt))
    pairs.append((np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)))      # a blank padding frame
    acc = SemanticAccumulator(num_classes=n)
    for p, g in pairs:
        acc.add(p, g)
    iou, f, count = reference_semantic(pairs, n)
    assert acc.iou.tolist() == iou.tolist() and acc.f.tolist() == f.tolist()
    assert acc.count.tolist() == count.tolist()
