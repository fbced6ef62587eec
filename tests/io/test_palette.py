import numpy as np

from ssp.io.palette import NUM_CLASSES, binary_from_rgb, colorize, palette, rgb_to_labels


def test_known_colours():
    pal = palette()
    assert tuple(pal[0]) == (0, 0, 0)
    assert tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[2]) == (0, 128, 0)
    assert tuple(pal[3]) == (128, 128, 0)
    assert tuple(pal[15]) == (192, 128, 128)   # PASCAL VOC "person"


def test_round_trip_all_classes():
    labels = np.arange(NUM_CLASSES, dtype=np.uint8).reshape(1, -1).repeat(3, axis=0)
    assert np.array_equal(rgb_to_labels(colorize(labels)), labels)


def test_colours_are_distinct():
    pal = palette()[:NUM_CLASSES]
    assert len({tuple(c) for c in pal}) == NUM_CLASSES


def test_unknown_colour_is_background_but_foreground_in_binary():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)  # not a palette colour
    assert rgb_to_labels(rgb)[0, 0] == 0
    assert binary_from_rgb(rgb)[0, 0] == 1
    assert binary_from_rgb(rgb).sum() == 1
