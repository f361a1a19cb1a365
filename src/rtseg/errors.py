"""The error family for bad input from a user (a file, a config key, an option): reported as a message, not a bug.

Every other exception escaping a task is a defect in rtseg; the command line shows its traceback and asks for a report.
"""
from __future__ import annotations

__all__ = ["UserError", "OptionError", "USER_ERRORS"]


class UserError(Exception):
    """Bad input from the user: a missing or malformed file, an unknown name, a value out of range.

    The message names the file, key or option and what is expected; the command line prints it on one line.
    """


class OptionError(UserError, ValueError):
    """Options of a task that are out of range or do not go together (e.g. ``--int8`` without ``--calibration``)."""


# What the command line reports as a message (exit 2) rather than as a bug: the family above, and a file that cannot
# be read or written (missing, no permission, disk full), which is the user's to fix.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, OSError)
