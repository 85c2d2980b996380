"""Writes small tfds-format datasets (array_record files + metadata) without TensorFlow.

For tests and benchmarks where no real copy exists: the files are what
`tfds.builder(name, file_format='array_record').download_and_prepare()` would leave, for the
registered tfds dataset `name` (same features, version folder and file names), holding the
examples given here; `tfds.data_source(name, data_dir=...)` then reads them like the real thing.
Images are PNG-encoded with PIL (tfds stores PNG for these datasets; CelebA's JPEG is also
accepted with `image_format='JPEG'`). Features not given get zeros / empty strings.
"""

from __future__ import annotations

import io
import os
from typing import Mapping

import numpy as np
from PIL import Image


def _encode_image(image: np.ndarray, image_format: str) -> bytes:
  image = np.asarray(image, np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=image_format)
  return buf.getvalue()


def write_tfds_dataset(name: str, data_dir: str, splits: Mapping[str, Mapping[str, np.ndarray]],
                       image_format: str = "PNG") -> str:
  """Writes `splits` ({split: {feature: (N, ...) array}}) as tfds dataset `name` under `data_dir`.

  Returns:
    The version folder written (data_dir/name/version).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  out_dir = os.fspath(builder.data_path)
  os.makedirs(out_dir, exist_ok=True)
  serialized = tfds.core.utils.flatten_nest_dict(builder.info.features.get_serialized_info())
  image_keys = {k for k, f in tfds.core.utils.flatten_nest_dict(builder.info.features).items()
                if isinstance(f, tfds.features.Image)}
  split_infos = []
  for split, columns in splits.items():
    num = len(next(iter(columns.values())))
    filename = f"{name}-{split}.array_record-00000-of-00001"
    writer = array_record_module.ArrayRecordWriter(os.path.join(out_dir, filename),
                                                   "group_size:1")
    for i in range(num):
      example = tf_example_pb2.Example()
      for key, info in serialized.items():
        feature = example.features.feature[key]
        value = columns[key][i] if key in columns else None
        if key in image_keys:
          feature.bytes_list.value.append(_encode_image(value, image_format))
        elif np.dtype(info.np_dtype).kind in "OSU":
          feature.bytes_list.value.append(b"" if value is None else str(value).encode())
        elif np.dtype(info.np_dtype).kind == "f":
          feature.float_list.value.append(0.0 if value is None else float(value))
        else:
          feature.int64_list.value.append(0 if value is None else int(value))
      writer.write(example.SerializeToString())
    writer.close()
    template = tfds.core.ShardedFileTemplate(data_dir=out_dir, dataset_name=name, split=split,
                                             filetype_suffix="array_record")
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[num], filename_template=template,
        num_bytes=os.path.getsize(os.path.join(out_dir, filename))))
  builder.info.set_splits(tfds.core.SplitDict(split_infos))
  builder.info.write_to_directory(out_dir)
  return out_dir
