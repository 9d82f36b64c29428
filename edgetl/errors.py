"""Errors that the CLI turns into a one-line message and a non-zero exit (no traceback)."""


class EdgetlError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""
