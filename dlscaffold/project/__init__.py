"""The project stage: a research project's own code as the runtime sees it.

Owns importing a project's ``models.py``, ``dataloader.py`` and ``training_utils.py`` (``code``),
the names they define (``registry``: models, datasets, losses, evals) and what a run records of
them (``provenance``: versions, host, git commit and diff, code hashes).

May import: ``errors``, ``losses``, ``_version``, ``config`` and ``records`` (the run folder's file
names). Nothing here imports torch at import time.
"""
