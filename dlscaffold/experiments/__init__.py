"""The experiments stage: many runs and what is learned from them.

Owns listing runs (``runs``), seed groups (``groups``), sweeps and their files (``sweep``,
``sweep_file``), the one engine that runs a list of runs in this process, in worker processes or as
cluster jobs (``engine``; ``worker``, the entry of a worker process; ``submit``, ``jobs``), and
statistics, comparisons and ``load_runs`` (``results``).

May import: every stage below it and the commands ``train`` / ``evaluate`` / ``api``; never ``cli``.
"""
