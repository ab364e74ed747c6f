"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (file, row, key...). Printed as one line, never as a traceback."""

    exit_code = 2


def require_package(module: str, what: str, extra: str, package: str | None = None) -> None:
    """UserError ``"<what> needs the <package> package: pip install 'agebench[<extra>]'"`` unless ``module`` can
    be imported: an optional extra's one-line answer, found without importing it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the {package or module} package: pip install 'agebench[{extra}]'")
