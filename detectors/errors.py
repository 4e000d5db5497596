"""Errors a user can act on.

Every error raised for bad input derives from ``MSSDError`` so the CLI can print it as one line
(``mssd: error: <message>``) and exit 2, while genuine bugs keep their traceback.
"""


class MSSDError(Exception):
    """Base class for user-facing errors: the message alone must tell the user what to fix."""

    def __str__(self) -> str:
        # Raised in a DataLoader worker, torch re-raises the same class in the main process with the
        # message "Caught X in DataLoader worker process N.\nOriginal Traceback ...": the user needs only
        # the original one-line message, the traceback's last line.
        text = super().__str__()
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            last = [line for line in text.splitlines() if line.strip()][-1]
            head, sep, message = last.partition(": ")
            if sep and head.rpartition(".")[2] == type(self).__name__:
                return message
        return text


class ConfigError(MSSDError):
    """A config file, override or value is wrong. The message names the key path (and file:line)."""


class DataFormatError(MSSDError):
    """A dataset file is malformed. The message is ``FILE:LINE: what is wrong``."""


class NonFiniteLossError(MSSDError):
    """Training produced a NaN/inf loss. Never retried: the same config would diverge again."""
