"""User-facing errors: one clear line and an exit code (the CLI side is ``aesipe.utils.cli``)."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user caused and can fix (bad path, bad option, missing stage output).

    ``exit_code`` follows the CLI convention: 2 = usage error, 1 = the work ran but failed.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
