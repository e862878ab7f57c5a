"""The one exception type for mistakes a user can make and fix."""


class DatasetGANError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """
