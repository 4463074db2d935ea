"""The learner's exception tree.

LearnerError
├── BadParameters     estimator parameters out of range (bad configuration)
├── BadRecord         a training record that cannot be read (bad input: file, line, reason)
├── CheckpointError   a checkpoint that cannot be written, or read back intact (upstream: disk)
└── AnotherLearner    this fleet's learner is already running (configuration: one per fleet)
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


class AnotherLearner(LearnerError):
    """One learner per fleet: another process holds the learner's advisory lock in Postgres.

    Learners that split the partitions would each publish a model learnt on their share alone,
    the newest one overwriting the others' in every bidder; until their models are merged, a
    second learner refuses to start (a learner with ``RTBFLEET_LEARNER_SHARE=i/k`` learns from
    a consistent 1/k sample of the transactions, and is still the fleet's only learner)."""
