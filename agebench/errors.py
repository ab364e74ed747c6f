"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (file, row, key...). Printed as one line, never as a traceback."""

    exit_code = 2
