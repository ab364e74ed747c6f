"""Occlusion sensitivity (agebench.report.occlusion): where the map puts its mass, what it cannot see, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agebench.errors import UserError
from agebench.report.occlusion import blurred, default_window, occlusion_maps, positions

SIZE = 64
ROWS, COLS = slice(8, 16), slice(16, 48)  # the one region the toy predictor reads


def texture_age(images: torch.Tensor) -> torch.Tensor:
    """A toy model: 'age' = the fine texture (pixel-to-pixel differences) inside one band, blind to everything else."""
    band = images[:, :, ROWS, COLS]
    return (band[..., 1:] - band[..., :-1]).abs().mean(dim=(1, 2, 3)) * 10


def test_occlusion_puts_the_mass_where_the_predictor_reads_texture():
    torch.manual_seed(0)
    images = torch.rand(3, 3, SIZE, SIZE)
    maps = occlusion_maps(texture_age, images)
    window, _ = default_window((SIZE, SIZE))
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isclose(maps.max(axis=(1, 2)), 1).all() and maps.min() >= 0
    reach = np.zeros((SIZE, SIZE), bool)  # pixels whose windows can touch the band
    reach[ROWS.start - window + 1 : ROWS.stop + window - 1, COLS.start - window + 1 : COLS.stop + window - 1] = True
    assert (maps[:, ~reach] == 0).all()
    inside = np.zeros((SIZE, SIZE), bool)
    inside[ROWS, COLS] = True
    share = maps[:, inside].sum(axis=1) / maps.sum(axis=(1, 2))
    assert (share > 0.6).all(), share  # the band is 6% of the image


def test_a_colour_only_cue_is_invisible_to_a_blurred_window():
    """Blur keeps flat colour: a model reading the mean colour of flat regions gives all-zero (flat) maps."""
    images = torch.zeros(2, 3, SIZE, SIZE)
    images[0] += 0.3
    images[1] += 0.8
    assert torch.allclose(blurred(images, 8), images)
    maps = occlusion_maps(lambda x: x.mean(dim=(1, 2, 3)) * 50, images)
    assert (maps == 0).all()


def test_windows_cover_every_pixel_and_defaults_scale_with_the_image():
    assert positions(64, 8, 4) == list(range(0, 57, 4))
    assert positions(10, 4, 4) == [0, 4, 6]  # the last window flush with the edge
    assert default_window((64, 64)) == (8, 4) and default_window((224, 200)) == (25, 12)
    calls = []

    def count(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x))

    occlusion_maps(count, torch.rand(2, 3, 10, 10), window=4, stride=4)
    assert sum(calls) == 2 + 2 * 9  # the unoccluded batch, then 3 x 3 windows per image


@pytest.mark.parametrize(
    ("window", "stride", "match"), [(65, None, "window 65"), (0, 1, "window 0"), (8, 9, "stride 9")]
)
def test_bad_windows_are_one_line_errors(window, stride, match):
    with pytest.raises(UserError, match=match):
        occlusion_maps(texture_age, torch.rand(1, 3, SIZE, SIZE), window=window, stride=stride)
