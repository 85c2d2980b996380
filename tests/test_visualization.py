"""Image grids: layout, value range, and the layer titles of the hierarchical-sampling figure."""

import numpy as np

from hebm_jax import visualization


def test_grid_layout_and_range():
  images = np.stack([np.full((4, 4, 1), v) for v in (-1.0, 0.0, 1.0, 3.0)])
  grid = visualization.make_grid(images, ncol=2, pad=1)
  assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 1)
  assert grid[1, 1, 0] == 0.0 and grid[1, 6, 0] == 0.5 and grid[6, 1, 0] == 1.0
  assert grid[6, 6, 0] == 1.0  # clipped
  assert grid[0, 0, 0] == 1.0  # white padding


def test_layer_names_follow_the_paper():
  assert visualization.layer_names(3) == ["z1 (bottom)", "z2", "z3 (top)"]


def test_titles_are_drawn_above_each_panel():
  panels = [np.ones((20, 90, 3), np.float32) for _ in range(3)]
  out = visualization.with_titles(panels, visualization.layer_names(3), gap=4)
  header = out.shape[0] - 20
  assert out.shape == (header + 20, 3 * 90 + 2 * 4, 3) and header > 8
  np.testing.assert_array_equal(out[header:], visualization.side_by_side(panels, 4))
  ink = out[:header, :, 0] < 0.5
  # Text starts in each panel's column range, and the header is otherwise white.
  for i in range(3):
    assert ink[:, i * 94:i * 94 + 90].any()
  assert not ink[:, 90:94].any() and not ink[:, 184:188].any()
