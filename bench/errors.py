"""One error type for every user-facing failure: the CLI prints its message on one line and exits 2."""


class BenchError(Exception):
    """A user-facing error. The message names what is wrong and how to fix it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
