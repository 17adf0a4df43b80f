"""The run stage: a built run and the loop that trains it.

Owns assembling a run from a prepared config (``builder``: data, models, loaders), the check of
two samples through it before anything is written (``first_batch``), one epoch over a split
(``epoch``), one optimizer step (``trainer``), the epoch loop with validation, checkpoints and
early stopping (``loop``), stops by signal or time limit (``stops``), the progress bar
(``progress``), the summary printed at the start and the end (``summary``), and starting
data-parallel processes through torchrun (``launch``).

May import: everything below it: ``errors``, ``losses``, ``modules``, ``config``, ``project``,
``records``, ``data``, ``parts`` and ``prepare``.
"""
