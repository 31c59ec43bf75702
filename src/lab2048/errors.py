"""The one error type users see: a one-line message, printed by the CLI without a traceback."""


class UserError(Exception):
    """Bad input or a refused action; the message names the file (or option) and the problem."""
