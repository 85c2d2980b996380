"""Image grids for TensorBoard and PNG files."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


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


def save_png(grid: np.ndarray, path: str, scale: int = 1) -> None:
  """Writes a [0, 1] grid (H, W, C) as an 8-bit PNG, each pixel repeated `scale` times."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  arr = (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  if scale > 1:  # tiny images (8x8 to 32x32) are unreadable at their native size
    arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
  if arr.shape[-1] == 1:
    arr = arr[..., 0]
  Image.fromarray(arr).save(path)
