"""The run stage: a built run and the loop that trains it.

Owns assembling a run from a prepared config (``builder``: data, models, loaders), the check of
two samples through it before anything is written (``first_batch``), one epoch over a split
(``epoch``), one optimizer step (``trainer``), the epoch loop with validation, checkpoints and
early stopping (``loop``), stops by signal or time limit (``stops``), the progress bar
(``progress``) and the summary printed at the start and the end (``summary``).

May import: everything below it: ``errors``, ``losses``, ``modules``, ``config``, ``project``,
``records``, ``data``, ``build`` and ``prepare``.
"""
