"""The records stage: what a run leaves on disk and how it is read back.

Owns the run folder and the names of its files (``rundir``), reading a finished run folder and its
epochs (``runfiles``), checkpoints and their names (``checkpoint``), trackers (TensorBoard, MLflow,
Weights & Biases, ``metrics.jsonl``: ``trackers``), logged images (``images``) and the weight lineage between runs
(``lineage``).

May import: ``errors`` and ``config``; nothing above it (the project's code, data, parts, the loop).
"""
