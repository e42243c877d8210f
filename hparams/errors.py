"""The one exception type for bad user input.

Everything a user can get wrong (a name, a value, a path) raises `UserError`
with a one-line message that quotes the value and says what is allowed.
`main.py` prints that line and exits with status 2 instead of a traceback.
"""


class UserError(ValueError):
  """Bad input from the user: the message is meant to be read, not debugged."""
