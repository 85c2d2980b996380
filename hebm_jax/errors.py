"""Exception types for mistakes a user can make (bad config values, data that does not fit)."""


class ConfigError(ValueError):
  """An invalid configuration value, or data that does not fit the configuration.

  Messages start with the config field they concern (`config.data.eval_split: ...`).
  """


class LogDirError(ConfigError):
  """A TensorBoard directory (the workdir, or `<workdir>/eval`) that cannot be created or written.

  A `ConfigError`, so that `main.py` reports it as one line, like the other workdir problems.
  """
