"""The comparison figure (``engine/figure.py``): each panel's edge letters match where the anatomy is drawn, the
panels are cropped to the head, and the PNG is written."""

from __future__ import annotations

import numpy as np
import pytest
from MRISuperResLib.engine.figure import EDGE_LETTERS, VIEWS, _cropped, _head_window, _middle_slice, save_figure
from MRISuperResLib.imaging.volume import Grid, Volume

#: Where each letter's edge is in a 2D image: (rows, columns) the two rows or columns at that edge.
EDGE = {0: (slice(None), slice(0, 2)), 1: (slice(None), slice(-2, None)), 2: (slice(0, 2), slice(None)),
        3: (slice(-2, None), slice(None))}
#: LPS index order: the side each index axis grows towards and the one at its start.
SIDES = {0: ("R", "L"), 1: ("A", "P"), 2: ("I", "S")}


@pytest.mark.parametrize("view", VIEWS)
def test_edge_letters_name_the_side_drawn_there(view: str) -> None:
    for axis, (start_side, end_side) in SIDES.items():
        for side, region in ((start_side, slice(0, 2)), (end_side, slice(-2, None))):
            array = np.zeros((20, 20, 20), np.float32)
            index = [slice(None)] * 3
            index[axis] = region
            array[tuple(index)] = 1.0
            image, _ = _middle_slice(array, (1.0, 1.0, 1.0), view)
            letters = EDGE_LETTERS[view]
            if side not in letters:
                continue  # this axis is perpendicular to the view
            edge = letters.index(side)
            assert image[EDGE[edge]].mean() == 1.0, (view, side)
            assert image.mean() < 0.2


def test_panels_are_cropped_to_the_head(tmp_path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(0, 1, (64, 64, 32)).astype(np.float32) ** 2
    array[20:40, 10:50, 8:24] += 500.0
    volume = Volume(array, Grid((64, 64, 32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)))
    window = _head_window(volume)
    shape = _cropped(volume, window).shape
    assert 20 <= shape[0] <= 20 + 2 * 3 and 40 <= shape[1] <= 40 + 2 * 3 and 16 <= shape[2] <= 16 + 2 * 2
    finer = Volume(np.repeat(array, 2, axis=2), Grid((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, -0.5), np.eye(3)))
    assert abs(_cropped(finer, window).shape[2] - 2 * shape[2]) <= 2  # the same physical window, to a coarse voxel
    path = save_figure(tmp_path / "f.png", {"input": volume, "SR": finer,
                                            "difference SR - input": finer.with_array(finer.array * 0.0),
                                            "consistency": volume, "uncertainty": finer})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
