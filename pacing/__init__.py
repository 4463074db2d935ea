"""Pacing: ``pacing.gate`` (the pure library the bidder imports) and the pacer service
(``python -m pacing``), which plans each campaign's day, reconciles with committed spend and
grants spend leases. Importing ``pacing`` alone loads nothing else."""
