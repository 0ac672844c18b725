"""Test infrastructure: the test models, the retrieval eval and the long-document check.

Run from the repository root as ``python -m tests.support.NAME``; tests import them directly.
"""
