"""The single-run engine: trainer loop, schedule, EMA, checkpoints, validation and evaluation.

It consumes the detector contract (``detectors.api``) and never names a detector family.
"""
