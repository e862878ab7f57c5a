"""The one exception type for mistakes a user can make and fix."""

from pydantic import ValidationError


class DatasetGANError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """


def summarize(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: 'field: problem; field: problem' (a check of
    the whole model, which has no field, gives its message alone)."""
    def one(error: dict) -> str:
        if not error["loc"]:
            return error["msg"].removeprefix("Value error, ")
        return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"

    return "; ".join(one(error) for error in exc.errors())
