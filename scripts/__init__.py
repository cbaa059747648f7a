"""Build and test tooling around Docker: the engine, the images, the test run.

Not part of the installed package; run from the repository root, e.g.
``python -m scripts.engine status``, ``python -m scripts.images``,
``python -m scripts.testrun`` (what ``make test`` runs).
"""
