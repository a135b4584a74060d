"""Run units: each piece of work a study does, keyed by exactly what it depends on.

``store`` keeps units on disk and decides when one is done; ``recipes`` says what each kind of
unit (primary, priors, SegDecNet cell, distillation, inference cost) depends on and computes.
"""
