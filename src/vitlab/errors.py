"""The one exception type for mistakes a user can fix.

The CLI prints a `VitlabError` as a single line and exits non-zero; anything else is a bug and keeps its
traceback. Messages name the file or field at fault and say what to do about it.
"""


class VitlabError(ValueError):
    """Bad input from the user: a wrong name, shape, file or option."""
