"""Tests for records.photo_header: the DCT scale a JPEG is decoded at.

The format, size, truncation and status checks are tested through what gets stored
(test_stored_photo.py, test_odd_inputs.py); the EXIF orientation in test_photo_segments.py.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from records import photo_header


def _draft_scale(width: int, height: int, max_short_side: int | None) -> int:
    """``photo_header._draft_scale`` (the graph's one definition) on Python integers,
    eagerly and inside Dataset.map; 0 when not even 1/8 fits."""

    def scale(size):
        return photo_header._draft_scale(size[0], size[1], photo_header.MAX_PIXELS, max_short_side)

    size = tf.constant([height, width], tf.int64)
    mapped = next(tf.data.Dataset.from_tensors(size).map(scale).as_numpy_iterator())
    assert int(scale(size)) == mapped
    return int(mapped)


@pytest.mark.parametrize(
    "width, height, max_short_side, scale",
    [
        (8000, 6000, None, 1),  # 48 MP: under the limit, decoded as it is
        (12000, 12000, None, 2),  # 144 MP -> 36 MP
        (30000, 30000, None, 4),  # 900 MP: 1/2 is still 225 MP
        (12000, 12000, 160, 8),  # 1500 px short side is plenty for 160
        (12000, 12000, 4000, 2),  # 1/4 would leave 3000 < 4000
        (12000, 12000, 20000, 2),  # can never reach it: the mildest under the limit
        (65535, 65535, None, 0),  # 67 MP even at 1/8: too large
    ],
)
def test_draft_scale(width, height, max_short_side, scale):
    assert _draft_scale(width, height, max_short_side) == scale
