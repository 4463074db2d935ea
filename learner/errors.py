"""The learner's exception tree.

LearnerError
├── BadParameters     estimator parameters out of range (bad configuration)
├── BadRecord         a training record that cannot be read (bad input: file, line, reason)
└── CheckpointError   a checkpoint that cannot be written, or read back intact (upstream: disk)
"""

from __future__ import annotations


class LearnerError(Exception):
    """Base of every error raised by learner/."""


class BadParameters(LearnerError):
    pass


class BadRecord(LearnerError):
    """Bad input: ``where`` names the file and line (or row), ``reason`` what is wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class CheckpointError(LearnerError):
    pass
