"""Input pipeline (public facade over `hebm_jax.data`): sources, batch order, grain iterator.

Datasets (`config.data.name`): 'digits' (scikit-learn, in memory), and through `tfds.data_source`
(prepared array_record data, no TensorFlow, never a download): 'mnist', 'fashion_mnist',
'svhn_cropped', 'cifar10', 'celeb_a' (148x148 centre crop, then resize), 'shapes3d' (with its six
factors), and 'mnist_anomaly' (the MEG split of MNIST with a held-out digit).

  load_split(data_config, split) -> Source      random access: len(source), source.get(indices)
  train_batch(source, batch_size, seed, step, process_index=0, process_count=1, *, random_flip)
  train_iterator(source, data_config, batch_size, seed, start_step, num_steps, ...)   (grain)
  eval_batches(source, batch_size, num_batches=0, process_index=0, process_count=1)
  check_source(source, data_config); steps_per_epoch(num_examples, batch_size, field)
  validate_data_config(data_config)                 raises ConfigError; touches no disk

`source.get(indices)` returns {'image': float32 (n, H, W, C) in [-1, 1], 'label': int32 (n,)
(-1 without labels)}, plus 'factors' int32 (n, 6) for shapes3d and 'anomaly' int32 (n,) for
mnist_anomaly. The batch at step t is a pure function of (seed, t) (see `hebm_jax.data.batching`),
so a resumed run sees exactly the batches it would have seen, and each host reads only its share.
"""

from hebm_jax.data.anomaly import mnist_anomaly_split
from hebm_jax.data.batching import (TrainIterator, eval_batches, flip_mask, global_batch_indices,
                                    steps_per_epoch, train_batch, train_iterator)
from hebm_jax.data.datasets import (DATASETS, DataOptions, DatasetSpec, parse_split,
                                    validate_data_config)
from hebm_jax.data.sources import (DIGITS_NUM_TEST, ArraySource, ConcatSource, IndexView, Source,
                                   TfdsSource, cache_in_memory, check_source, load_digits,
                                   load_split, prepare_image, resize_images, to_model_range)

__all__ = [
    "DATASETS", "DIGITS_NUM_TEST", "ArraySource", "ConcatSource", "DataOptions", "DatasetSpec",
    "IndexView", "Source", "TfdsSource", "TrainIterator", "cache_in_memory", "check_source",
    "eval_batches", "flip_mask", "global_batch_indices", "load_digits", "load_split",
    "mnist_anomaly_split", "parse_split", "prepare_image", "resize_images", "steps_per_epoch",
    "to_model_range", "train_batch", "train_iterator", "validate_data_config",
]
