"""AVSBench colour masks: the PASCAL-VOC bit-interleaved palette and its inverse.

Class j (0 = background ... 70) has the colour built bit by bit: for i = 0..7,
R |= bit(j, 3i) << (7 - i), G |= bit(j, 3i + 1) << (7 - i), B |= bit(j, 3i + 2) << (7 - i).
A pixel's class is the exact RGB match in that palette; the binary (AVS) ground truth is any
non-black pixel.
"""
from __future__ import annotations

import numpy as np

NUM_CLASSES = 71  # AVSBench-semantic: background + 70 sounding-object classes


def palette(n: int = 256) -> np.ndarray:
    """[n, 3] uint8 colours, row j = colour of class j."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for j in range(n):
        r = g = b = 0
        for i in range(8):
            r |= ((j >> (3 * i)) & 1) << (7 - i)
            g |= ((j >> (3 * i + 1)) & 1) << (7 - i)
            b |= ((j >> (3 * i + 2)) & 1) << (7 - i)
        pal[j] = (r, g, b)
    return pal


_PALETTE = palette(256)
# Colour (packed as 0xRRGGBB) -> class index, for the classes that exist.
_LOOKUP = {int(c[0]) << 16 | int(c[1]) << 8 | int(c[2]): j for j, c in enumerate(_PALETTE[:NUM_CLASSES])}


def colorize(labels: np.ndarray) -> np.ndarray:
    """[..., H, W] class indices -> [..., H, W, 3] uint8 palette colours."""
    return _PALETTE[np.asarray(labels, dtype=np.int64)]


def rgb_to_labels(rgb: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[H, W, 3] uint8 colour mask -> [H, W] uint8 class indices (exact palette match).

    A colour that is not one of the first ``num_classes`` palette entries maps to background (0),
    as the reference loader does; callers that care can compare ``binary_from_rgb``.
    """
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    out = np.zeros(packed.shape, dtype=np.uint8)
    for colour, j in _LOOKUP.items():
        if j and j < num_classes:
            out[packed == colour] = j
    return out


def binary_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] colour mask -> [H, W] uint8 {0, 1}: any non-black pixel is foreground."""
    return (np.asarray(rgb).max(axis=-1) > 0).astype(np.uint8)
