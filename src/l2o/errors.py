"""The one exception type l2o raises for bad input."""

from __future__ import annotations


class L2OError(ValueError):
    """Bad input: an unknown name, an invalid option, a missing or corrupt file.

    The message says what is wrong and how to fix it; the CLI prints it as one
    ``error:`` line and exits with status 2.
    """
