"""Benchmarks: each ``bench/<name>.py`` has a ``main() -> None`` that prints a ratio against a
baseline measured in the same run. ``python -m bench`` runs them all, ``python -m bench NAME...``
only those named."""
