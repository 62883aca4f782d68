"""The one error type for user mistakes.

    raise UserError("learning rate must be > 0, got lr=-0.1 (studies/x.toml, stage 3)")

The CLI prints a UserError as one line on stderr and exits with `exit_code`; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: says what was wrong, what was expected and what to do."""

    exit_code = 2


class DataError(UserError):
    """The dataset is missing, damaged or not the canonical one."""

    exit_code = 3
