"""The tools stage: commands that work beside runs, not in them.

Owns the project template tooling (``scaffold``: ``dlscaffold new`` / ``update`` through copier) and
the module library's layer planner (``arch``: ``dlscaffold arch``).

May import: ``errors``, ``_version``, ``config``, ``records`` (file names) and ``modules``; nothing that trains.
"""
