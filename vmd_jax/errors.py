"""Errors that the command line reports as one line and a non-zero exit."""


class VMDError(Exception):
  """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(VMDError):
  """A config value is missing, of the wrong type, or out of range."""


class DataError(VMDError):
  """A data file is missing or malformed, or a dataset name is unknown."""


class CheckpointError(VMDError):
  """A checkpoint does not match the config, or cannot be read."""


class TrainingError(VMDError):
  """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""
