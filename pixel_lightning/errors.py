"""User-facing errors: mistakes a user can fix, reported as one paragraph without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user caused and can fix (bad config, missing data, unusable checkpoint).

    The message is the whole report: it names the problem and says how to fix it. The command
    line entry points print it alone and exit with status 2; anything else is a bug and keeps
    its traceback.
    """


class DataError(UserError):
    """Dataset files are missing, truncated or corrupt."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe to load, or does not fit this code."""


class NonFiniteError(UserError):
    """Training diverged (a loss or the weights became NaN or infinite), or a model's outputs are not finite."""


class OutputError(UserError):
    """An output (checkpoint, sample grid, record) could not be written: a full disk or an unwritable folder."""
