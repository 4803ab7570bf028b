"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """Bad input, a bad config value, a missing file or model: the message says what to do."""


class ConfigError(UserError):
    """A configuration value breaks a rule; the message names the field and the rule."""


class DataError(UserError):
    """A data file cannot be used; the message names `file:line`, the field and what was expected."""


class ModelError(UserError):
    """A model cannot be found or loaded."""


class TrainingDiverged(UserError):
    """The loss or gradients became NaN/inf; the last good checkpoint is kept."""


class MissingExtra(UserError):
    """An optional dependency is not installed; the message names the extra that installs it."""
