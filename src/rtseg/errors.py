"""The base of every error caused by what a user gave (a file, a key, an option); the CLI prints these without a traceback."""


class UserError(Exception):
    """An error in the user's input, reported with a message that names the input and what is expected."""
