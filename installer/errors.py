"""The installer's errors. Each says what to fix; none carries a stack trace to the user.

    InstallerError              exit 1
      AnswerError(key, ...)     an answer is missing or wrong: names the answer-file key (exit 2)
      StepError(step, ...)      a step failed; what this run changed was undone (exit 1)
      UnsupportedError          this platform cannot host the ZVM service (yet) (exit 3)
"""

from __future__ import annotations


class InstallerError(Exception):
    exit_code = 1


class AnswerError(InstallerError):
    exit_code = 2

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class Invalid(Exception):
    """Raised by a question's check: the answer is refused with ``message``; ``key`` names the question to
    ask again when it is another one (a vCenter that cannot be reached is the address's fault, not the
    password's)."""

    def __init__(self, message: str, key: str | None = None):
        self.message = message
        self.key = key
        super().__init__(message)


class StepError(InstallerError):
    def __init__(self, step: str, message: str):
        self.step = step
        self.message = message
        super().__init__(f"step '{step}' failed: {message}")


class UnsupportedError(InstallerError):
    exit_code = 3
