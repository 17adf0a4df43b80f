"""Seed groups: ``dlscaffold train config.yml --seeds 1,2,3 [--workers N]`` runs a config once per seed.

A group's split is made once, before any of its runs starts, from the first seed (as that seed's
run would make it), and written to ``<logging_dir>/groups/<group id>/idx_dict.json``; every run of
the group, the first seed's included, reads it through ``dataloading_params.idx_dict_path`` (and
follows its points' ids, as every reuse of a split does: ``dlscaffold.parts.point_ids``). So
the seed changes the initialisation and the data order only, the same way in one process, in
worker processes (``--workers N``) and as cluster jobs (``dlscaffold submit --seeds``). A config
that names an ``idx_dict_path`` already gives every run that split; ``--vary-split`` lets each
run make its own from its seed. Each run records ``"group": {"id", "seed", "size"}`` in its
``run.json`` and is named ``<YYYYMMDD>_<N>_<run_notes>_seed<S>``. ``dlscaffold runs DIR
--group`` gives the group's statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.errors import UserError
from dlscaffold.records.rundir import SPLIT_FILE

if TYPE_CHECKING:
    from dlscaffold.experiments.engine import TrainTask
    from dlscaffold.prepare import Prepared
    from dlscaffold.train import TrainOptions

Echo = Callable[[str], None]
GROUPS_DIR = "groups"  # <logging_dir>/groups/<group id>/: a group's shared split (not a run folder)


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; anything else is one line."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        seeds = [int(part) for part in parts]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(
            f"--seeds '{text}': expected distinct whole numbers >= 0, separated by commas, e.g. --seeds 1,2,3"
        )
    return seeds


def group_info(group_id: str, seed: int, size: int) -> dict[str, Any]:
    return {"group": {"id": group_id, "seed": seed, "size": size}}


def seed_overrides(seed: int, split: Path | None) -> list[str]:
    """A group run's own overrides: its seed and, unless each run makes its own, the group's split file."""
    extra = [f"training_params.seed={seed}"]
    if split is not None:
        extra.append(f"dataloading_params.idx_dict_path={split}")
    return extra


def train_seeds(
    seeds: str,
    config: Path | None,
    overrides: list[str],
    *,
    project_dir: Path | None = None,
    options: TrainOptions | None = None,
    resume: Path | None = None,
    nproc: int = 1,
    workers: int = 1,
    vary_split: bool = False,
    echo: Echo = print,
) -> int:
    """``dlscaffold train --seeds``: the option checks, then :func:`train_group`; the exit code.

    Raises:
        UserError: bad seeds, an option a group cannot take, no config, any config problem.
    """
    chosen = parse_seeds(seeds)
    debug = bool(options is not None and options.debug)
    if resume is not None or nproc > 1 or debug:
        flag = "--resume" if resume is not None else "--nproc" if nproc > 1 else "--debug"
        raise UserError(f"--seeds cannot be combined with {flag}; run each seed's run with it separately")
    if config is None:
        raise UserError("train --seeds: expected a config file first, e.g. dlscaffold train config.yml --seeds 1,2,3")
    group = {"workers": workers, "vary_split": vary_split, "project_dir": project_dir, "options": options}
    return train_group(config, overrides, chosen, **group, echo=echo)


def train_group(
    config: Path,
    overrides: list[str],
    seeds: list[int],
    *,
    workers: int = 1,
    vary_split: bool = False,
    project_dir: Path | None = None,
    options: TrainOptions | None = None,
    echo: Echo = print,
) -> int:
    """Train the config once per seed, in this process or in ``workers`` processes; returns the
    exit code (0 when every run completed)."""
    from dlscaffold.experiments import engine

    group = plan(config, overrides, seeds, project_dir=project_dir, vary_split=vary_split, options=options, echo=echo)
    if workers > 1:
        for task in group.tasks:
            task.progress_bar = False
    code = engine.run(group.tasks, workers, echo).exit_code(len(group.tasks))
    if code == 0:
        from dlscaffold.run.summary import program

        statistics = f"{program('runs')} {group.logging_dir} --group"
        echo(f"Seed group {group.id}: {len(seeds)} runs; their statistics: {statistics}")
    return code


@dataclass
class Group:
    """A seed group ready to run: its id, its runs as tasks, where they go, and its split file."""

    id: str
    tasks: list[TrainTask]  # one per seed
    logging_dir: Path
    split: Path | None  # the group's idx_dict.json; None: the config's own, or each run's (--vary-split)


def plan(
    config: Path,
    overrides: list[str],
    seeds: list[int],
    *,
    project_dir: Path | None = None,
    vary_split: bool = False,
    options: TrainOptions | None = None,
    echo: Echo = print,
) -> Group:
    """Check the config (every problem at once, before anything is written), make the group's split
    once (:func:`write_split`), and give its runs as tasks, labelled ``seed S``.

    Raises:
        UserError: any config problem ``train`` would report, or a logging folder that cannot be made.
    """
    from dlscaffold.experiments.engine import TrainTask
    from dlscaffold.prepare import prepare
    from dlscaffold.records.rundir import check_logging_dir
    from dlscaffold.train import _process_state_kept  # the project's modules and sys.path left as a run leaves them

    dev = bool(options is not None and options.dev)
    first = [*overrides, f"training_params.seed={seeds[0]}", *(["training_params.use_dev=true"] if dev else [])]
    group_id, split = uuid.uuid4().hex[:12], None
    with _process_state_kept():
        prepared = prepare(config, first, project_dir)  # as the first seed's run prepares it
        logging_dir = Path(prepared.config.logging_params.logging_dir)
        check_logging_dir(logging_dir)
        if not vary_split and prepared.config.dataloading_params.idx_dict_path is None:
            split = write_split(prepared, logging_dir / GROUPS_DIR / group_id)
    echo(f"Seed group {group_id}: {len(seeds)} runs, seeds {', '.join(map(str, seeds))}")
    flags = {"dev": dev, "no_save": options.no_save, "device": options.device} if options is not None else {}
    tasks = [
        TrainTask(
            config=config,
            overrides=[*overrides, *seed_overrides(seed, split)],
            project=project_dir,
            run_info=group_info(group_id, seed, len(seeds)),
            run_notes_suffix=f"seed{seed}",
            progress_bar=bool(options is not None and options.progress_bar),
            label=f"seed {seed}",
            **flags,
        )
        for seed in seeds
    ]
    return Group(group_id, tasks, logging_dir, split)


def write_split(prepared: Prepared, folder: Path) -> Path:
    """Make the split the prepared config's run would make (its dataset built after seeding every
    RNG, as a run does) and write it to ``folder/idx_dict.json``; returns that file."""
    from dlscaffold.data import save_idx_dict
    from dlscaffold.run.builder import dataset_and_split

    _, split = dataset_and_split(prepared)
    folder.mkdir(parents=True, exist_ok=True)
    save_idx_dict(split, folder / SPLIT_FILE)
    return folder / SPLIT_FILE
