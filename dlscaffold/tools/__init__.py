"""The tools stage: commands that work beside runs, not in them.

Owns the project template tooling (``scaffold``: ``dlscaffold new`` / ``update`` through copier),
the module library's layer planner (``arch``: ``dlscaffold arch``), the config's JSON Schema
(``schema``: ``dlscaffold schema``), the export of a run's models for deployment (``export``,
``export_piece``, ``export_check``: ``dlscaffold export``), the profile of training steps
(``profile``: ``dlscaffold profile``) and the determinism fingerprint of a project
(``fingerprint``: ``dlscaffold.fingerprint``, the generated project's determinism test).

May import every stage below it. ``scaffold``, ``arch`` and ``schema`` import only ``errors``,
``_version``, ``config``, ``records`` (file names) and ``modules``, so they answer without torch's
start-up cost; ``export``, ``profile`` and ``fingerprint`` build runs (``api``, ``train``, ``run``).
"""
