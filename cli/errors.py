"""Errors the CLI prints as one clear line, without a traceback."""


class UserFacingError(Exception):
    """An error whose message is the whole story for the user."""
