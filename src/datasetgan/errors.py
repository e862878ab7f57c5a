"""The one exception type for mistakes a user can make and fix."""

from pydantic import ValidationError


class DatasetGANError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """


def summarize(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: 'field: problem; field: problem'."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
