"""Exception types for mistakes a user can make (bad config values, data that does not fit)."""


class ConfigError(ValueError):
  """An invalid configuration value, or data that does not fit the configuration.

  Messages start with the config field they concern (`config.data.eval_split: ...`).
  """
