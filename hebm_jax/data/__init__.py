"""Input data: dataset registry and config checks, random-access sources, and batching.

  datasets   what each supported dataset is (splits, shape, labels), `DataOptions` read from
             `config.data`, `validate_data_config`, and the split-spec parser ('train[:10%]').
  sources    random-access sources: tfds array_record (decoded and preprocessed here), in-memory
             arrays, index views, concatenations; `load_split`, the RAM cache, missing-data errors.
  anomaly    the MEG/ALAD MNIST anomaly split, as a function of the label array.
  batching   the seed-and-step batch order, flips, eval batches and the grain train iterator.
  workers    grain worker processes (shared-memory threshold, absl flags in workers).
  synthetic  writes small tfds-format array_record datasets, for tests and benchmarks.

`hebm_jax.input_pipeline` is the public facade over these modules.
"""
