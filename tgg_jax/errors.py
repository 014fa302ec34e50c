"""UserError: a mistake the user fixes (a config value, a path, a missing dataset), reported by
the CLIs as one line and exit code 2, never as a traceback."""


class UserError(ValueError):
    """Its message is one line that names what is wrong and how to fix it."""
