"""Reading and writing the small files of a workdir, local or in an object store (gs://, s3://).

On TPU pods the workdir is usually a Cloud Storage URL; orbax and the TensorBoard writer handle
those themselves, and everything else a run writes beside them (run state, summary, images,
evaluation results, samples) goes through these functions, which use `etils.epath` for URLs.
Local files are written to a temporary name and renamed, so that a crash never leaves half a
file in place of a good one; an object store replaces an object in one request, which is atomic
there already.
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """True for URLs such as gs://bucket/run, False for local paths."""
  return "://" in os.fspath(path)


def absolute(path: str) -> str:
  """A local path made absolute; URLs unchanged (`os.path.abspath` would mangle them)."""
  return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def is_dir(path: str) -> bool:
  return epath.Path(path).is_dir()


def read_text(path: str) -> str:
  return epath.Path(path).read_text()


def read_bytes(path: str) -> bytes:
  return epath.Path(path).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` (creating its directory); local files atomically."""
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    target.write_bytes(data)
    return
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


def rename(src: str, dst: str) -> None:
  """Renames `src` to `dst`, replacing `dst` (on object stores a copy and a delete)."""
  epath.Path(src).replace(dst)
