"""Image grids for TensorBoard and PNG files."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from hebm_jax import fileio


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """(N, H, W, C) images in [-1, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) grid in [0, 1]."""
  images = np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, col = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
  return grid


def side_by_side(grids: list[np.ndarray], gap: int = 4) -> np.ndarray:
  """Concatenates grids of equal height left to right with white gaps."""
  h, c = grids[0].shape[0], grids[0].shape[-1]
  parts = []
  for i, g in enumerate(grids):
    if i:
      parts.append(np.ones((h, gap, c), np.float32))
    parts.append(g)
  return np.concatenate(parts, axis=1)


def layer_names(num_layers: int) -> list[str]:
  """The paper's names for the layers, bottom first: ['z1 (bottom)', 'z2', ..., 'zL (top)']."""
  names = [f"z{l + 1}" for l in range(num_layers)]
  names[0] += " (bottom)"
  names[-1] += " (top)"
  return names


def with_titles(grids: list[np.ndarray], titles: list[str], gap: int = 4) -> np.ndarray:
  """`side_by_side` with a white header strip holding each grid's title (PIL's built-in font).

  Args:
    grids: [0, 1] grids (H, W_i, C) of equal height.
    titles: one string per grid, drawn left-aligned above it.

  Returns:
    (H + header, sum W_i + gaps, C) in [0, 1].
  """
  from PIL import ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top

  body = side_by_side(grids, gap)
  header_height = 14
  header = Image.new("L", (body.shape[1], header_height), 255)
  draw = ImageDraw.Draw(header)
  font = ImageFont.load_default()
  x = 0
  for grid, title in zip(grids, titles):
    draw.text((x + 2, 1), title, fill=0, font=font)
    x += grid.shape[1] + gap
  strip = np.asarray(header, np.float32)[..., None] / 255.0
  strip = np.repeat(strip, body.shape[-1], axis=-1)
  return np.concatenate([strip, body], axis=0)


def save_png(grid: np.ndarray, path: str, scale: int = 1) -> None:
  """Writes a [0, 1] grid (H, W, C) as an 8-bit PNG, each pixel repeated `scale` times."""
  arr = (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  if scale > 1:  # tiny images (8x8 to 32x32) are unreadable at their native size
    arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
  if arr.shape[-1] == 1:
    arr = arr[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(arr).save(buffer, format="PNG")
  fileio.write_bytes(path, buffer.getvalue())
