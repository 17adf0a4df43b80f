"""Seed groups: ``dlscaffold train config.yml --seeds 1,2,3 [--workers N]`` runs a config once per seed.

Every run of a group uses the split of the first seed's run (``dataloading_params.idx_dict_path``
set to its ``idx_dict.json``), so the seed changes the initialisation and the data order only;
``--vary-split`` lets it change the split too. Each run records ``"group": {"id", "seed", "size"}``
in its ``run.json`` and is named ``<YYYYMMDD>_<N>_<run_notes>_seed<S>``. ``dlscaffold runs DIR
--group`` gives the group's statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlscaffold.errors import UserError
from dlscaffold.records.rundir import SPLIT_FILE

Echo = Callable[[str], None]


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


def seed_overrides(seed: int, first_run: Path | None) -> list[str]:
    """A group run's own overrides: its seed and, after the first, the first run's split."""
    extra = [f"training_params.seed={seed}"]
    if first_run is not None:
        extra.append(f"dataloading_params.idx_dict_path={first_run / SPLIT_FILE}")
    return extra


def train_group(
    config: Path,
    overrides: list[str],
    seeds: list[int],
    *,
    workers: int = 1,
    vary_split: bool = False,
    project_dir: Path | None = None,
    options: Any = None,
    echo: Echo = print,
) -> int:
    """Train the config once per seed; returns the exit code (0 when every run completed)."""
    from dlscaffold.train import TrainOptions

    options = options or TrainOptions()
    group_id = uuid.uuid4().hex[:12]
    echo(f"Seed group {group_id}: {len(seeds)} runs, seeds {', '.join(map(str, seeds))}")
    if workers > 1:
        return _in_processes(config, overrides, seeds, group_id, workers, vary_split, project_dir, options, echo)
    import dataclasses

    from dlscaffold.train import train

    first: Path | None = None
    for seed in seeds:
        run_options = dataclasses.replace(
            options, run_info=group_info(group_id, seed, len(seeds)), run_notes_suffix=f"seed{seed}"
        )
        extra = seed_overrides(seed, None if vary_split else first)
        result = train(config, [*overrides, *extra], project_dir=project_dir, options=run_options, echo=echo)
        first = first or result.run_dir
    _done(group_id, len(seeds), first, echo)
    return 0


def _done(group_id: str, size: int, first: Path | None, echo: Echo) -> None:
    if first is not None:
        from dlscaffold.run.summary import program

        echo(f"Seed group {group_id}: {size} runs; their statistics: {program('runs')} {first.parent} --group")


def _in_processes(
    config: Path,
    overrides: list[str],
    seeds: list[int],
    group_id: str,
    workers: int,
    vary_split: bool,
    project_dir: Path | None,
    options: Any,
    echo: Echo,
) -> int:
    """The runs as worker processes, at most ``workers`` at once; the first seed's run starts first
    and the others once its split is written."""
    import subprocess
    import threading
    import time

    from dlscaffold.experiments import workers as pool

    flags = [flag for flag, on in (("--dev", options.dev), ("--no-save", options.no_save)) if on]
    flags += ["--device", options.device] if options.device else []
    flags += ["--project", str(project_dir)] if project_dir is not None else []
    gpus, procs, codes = pool.gpu_count(), [], []
    first: list[Path] = []

    def relay(proc: subprocess.Popen, seed: int) -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("Logging and Model Saving Directory: ") and not first:
                first.append(Path(line.partition(": ")[2]))
            echo(f"[seed {seed}] {line}")

    threads = []
    with pool.Forwarding(procs, echo) as forwarding:
        for index, seed in enumerate(seeds):
            while sum(p.poll() is None for p in procs) >= workers and forwarding.signum is None:
                time.sleep(0.2)
            if forwarding.signum is not None:
                break
            extra = seed_overrides(seed, None if vary_split or not first else first[0])
            args = ["train", str(config), *overrides, *extra, *flags, "--group", f"{group_id}:{seed}:{len(seeds)}"]
            proc = pool.start(
                args,
                pool.worker_env(index, workers, gpus),
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            thread = threading.Thread(target=relay, args=(proc, seed), daemon=True)
            thread.start()
            threads.append(thread)
            if index == 0 and not vary_split:  # the others take its split: wait until it is written
                while not first and proc.poll() is None:
                    time.sleep(0.1)
                if not first:
                    break  # it failed before making its run folder; its error is printed
        codes = [proc.wait() for proc in procs]
        for thread in threads:
            thread.join()
    if forwarding.signum is not None:
        from dlscaffold.run.stops import EXIT_CODES

        return EXIT_CODES.get(forwarding.signum, 130)
    failed = [code for code in codes if code != 0]
    if not failed and len(codes) == len(seeds):
        _done(group_id, len(seeds), first[0] if first else None, echo)
    return failed[0] if failed else (0 if len(codes) == len(seeds) else 2)
