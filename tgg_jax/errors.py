"""Errors the command-line tools turn into one line instead of a traceback.

UserError: the command or its inputs are wrong (a config field, a path, a changed config on
resume); the tools print its message and exit with code 2 before touching devices or files.
RunStopped: a run stopped itself for a reason it names (non-finite loss, a failed checkpoint
save); the tools print the message and exit with code 1.
"""


class UserError(ValueError):
    """A mistake in the command or its inputs; the message is one line that says what to change."""


class RunStopped(RuntimeError):
    """A run that stopped on purpose; the message names why and what is kept."""
