"""From T-1 flow fields to the flow mask M_O: grayscale maps, Eq. 1 smoothing, binarization.

Eq. 1 (temporal smoothing). The paper writes the T maps from T-1 flows with indices that are
off by one; the reading implemented here, with flows F_1..F_{T-1} (F_t from frame t to t+1)
turned into grayscale images G_1..G_{T-1}, is

    M_1 = G_1
    M_t = (G_{t-1} + G_t) / 2      for t = 2 .. T-1
    M_T = G_{T-1}

so that every frame t gets the motion of the flows that touch it.

Grayscale mapping (``flow.gray``):
  * ``magnitude`` (default): |F| in pixels, with motion below ``min_magnitude`` set to 0, divided
    by the largest magnitude of the video, so G is in [0, 1] and a still video is all zeros.
  * ``color``: the flow drawn as an HSV image (hue = direction, value = magnitude normalized as
    above, saturation 1), converted to RGB, then its luminance (0.299 R + 0.587 G + 0.114 B).

Binarization (``flow.binarize``): Otsu's threshold per map (default) or a fixed threshold on
[0, 1]; a map with no motion gives an empty mask. Connected blobs smaller than ``min_blob``
pixels are removed (0 keeps all).
"""
from __future__ import annotations

import cv2
import numpy as np


def magnitude(flow: np.ndarray) -> np.ndarray:
    """[..., 2] -> [...] Euclidean length of the flow vectors."""
    return np.sqrt((flow.astype(np.float32) ** 2).sum(-1))


def flow_to_color(flow: np.ndarray, scale: float | None = None) -> np.ndarray:
    """[H, W, 2] -> [H, W, 3] uint8 RGB: hue = direction, brightness = speed / scale."""
    mag = magnitude(flow)
    scale = scale or float(mag.max()) or 1.0
    ang = np.arctan2(flow[..., 1], flow[..., 0])                 # [-pi, pi]
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = ((ang + np.pi) / (2 * np.pi) * 179).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / scale * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def gray_maps(flows: np.ndarray, mode: str = "magnitude", min_magnitude: float = 0.5) -> np.ndarray:
    """[T-1, H, W, 2] flows -> [T-1, H, W] float32 grayscale images G_t in [0, 1]."""
    mag = magnitude(flows)
    mag[mag < min_magnitude] = 0.0
    peak = float(mag.max())
    if peak == 0.0:
        return np.zeros(mag.shape, np.float32)
    if mode == "magnitude":
        return (mag / peak).astype(np.float32)
    if mode == "color":
        flows = flows * (mag > 0)[..., None]
        rgb = np.stack([flow_to_color(f, peak) for f in flows]).astype(np.float32) / 255.0
        return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    raise ValueError(f"unknown gray mapping {mode!r} (magnitude | color)")


def smooth_eq1(gray: np.ndarray, T: int) -> np.ndarray:
    """Eq. 1: [T-1, H, W] grayscale flow images -> [T, H, W] per-frame motion maps."""
    if gray.shape[0] != T - 1:
        raise ValueError(f"Eq. 1 needs T-1 = {T - 1} flow images, got {gray.shape[0]}")
    if T == 1:
        return np.zeros((1,) + gray.shape[1:], np.float32)
    maps = np.empty((T,) + gray.shape[1:], np.float32)
    maps[0] = gray[0]
    maps[1:T - 1] = (gray[:-1] + gray[1:]) / 2.0
    maps[T - 1] = gray[T - 2]
    return maps


def remove_small_blobs(mask: np.ndarray, min_blob: int) -> np.ndarray:
    if min_blob <= 0 or not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_blob
    return keep[lab].astype(np.uint8)


def binarize(maps: np.ndarray, method: str = "otsu", threshold: float = 0.2, min_blob: int = 0) -> np.ndarray:
    """[T, H, W] maps in [0, 1] -> [T, H, W] uint8 M_O (1 = motion)."""
    out = np.zeros(maps.shape, np.uint8)
    for t, m in enumerate(maps):
        if m.max() <= 0:
            continue
        if method == "otsu":
            img = np.clip(m * 255, 0, 255).astype(np.uint8)
            thr, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            mask = img > thr
        elif method == "fixed":
            mask = m > threshold
        else:
            raise ValueError(f"unknown binarization {method!r} (otsu | fixed)")
        out[t] = remove_small_blobs(mask.astype(np.uint8), min_blob)
    return out


def flow_mask(flows: np.ndarray, T: int, *, gray: str = "magnitude", min_magnitude: float = 0.5,
              method: str = "otsu", threshold: float = 0.2, min_blob: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """T-1 flows of a video -> (Eq. 1 maps [T, H, W] float32, M_O [T, H, W] uint8)."""
    maps = smooth_eq1(gray_maps(flows, gray, min_magnitude), T)
    return maps, binarize(maps, method, threshold, min_blob)
