"""The one exception type for a user's mistake: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input (file, option, structure) that the user can fix; never a bug."""
