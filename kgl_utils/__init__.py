"""Shared code of the knowledge-guided surface-defect study notebooks."""

__version__ = "0.1.0"
