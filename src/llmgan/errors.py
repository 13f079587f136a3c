"""One exception type for problems the user can fix (bad input, bad config, missing model).

The CLI prints such an error as one line (`error: ...`) and exits with code 2; anything else is a
bug and keeps its traceback.
"""


class LlmganError(Exception):
    """A problem with the user's input, config or environment, with a message that says what to do."""


EXIT_USER_ERROR = 2
