"""The project's error types. A `UserError` is a mistake in what the user gave (a file, a flag, a
config key, a record): the programs report it as one line naming the culprit and exit non-zero
(`cli.run`); anything else is a bug and keeps its traceback."""


class UserError(Exception):
  """Bad input from the user; the message names the file / key / id."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work (checked before anything is compiled or written)."""


class CheckpointError(UserError):
  """No checkpoint where one was asked for, or one that belongs to another configuration."""


class DataError(UserError, ValueError):
  """A dataset, annotation, results or image file that cannot be used as given."""


def first_line(e: BaseException) -> str:
  """A library error's first line, for a one-line message (tensorflow's and orbax's run to
  pages); an OSError's strerror when it has one."""
  text = getattr(e, 'strerror', None) or str(e)
  lines = str(text).strip().splitlines()
  return lines[0][:300] if lines else ''
