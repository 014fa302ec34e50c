"""Errors the command-line tools turn into one line instead of a traceback.

UserError: the command or its inputs are wrong (a config field, a path, a changed config on
resume); the tools print its message and exit with code 2 before touching devices or files.
RunStopped: a run stopped itself for a reason it names (non-finite loss, a failed checkpoint
save); the tools print the message and exit with code 1.
"""

from absl import flags


class UserError(ValueError):
    """A mistake in the command or its inputs; the message is one line that says what to change."""


class RunStopped(RuntimeError):
    """A run that stopped on purpose; the message names why and what is kept."""


def flag_error_message(error: Exception, argv: list[str]) -> str:
    """A flag-parsing failure of an absl + ml_collections CLI as one line: a config file that
    raised gives its exception's own line, an unknown --config.KEY ml_collections' "did you mean"."""
    if isinstance(error, OSError):  # a config file that cannot be read
        return "--config: " + " ".join(str(error).split())
    if isinstance(error, flags.Error):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return f"{lines[0].split(':')[0]}: {lines[-1]}" if len(lines) > 1 else lines[0]
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]  # AttributeError(KeyError("'key'\nDid you mean ...?"))
    text = str(error.args[0]) if error.args else str(error)
    key, _, hint = text.partition("\n")
    key = key.strip("'\"")
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    culprit = next((o for o in overrides if o.endswith("." + key)), "--config")
    return f"{culprit}: no config key {key!r}" + (f" ({hint.strip()})" if hint.strip() else "")
