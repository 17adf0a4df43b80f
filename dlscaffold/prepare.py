"""Everything a run needs before its first step, with all problems reported at once.

:func:`prepare` reads the config, imports the project and checks the one against the other;
:func:`load_split` builds the dataset's ``idx_dict``. Nothing here writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlscaffold.checks import check_info_flow
from dlscaffold.config import Config, load_raw, resolve_paths, validate_raw
from dlscaffold.data import load_idx_dict, make_idx_dict, project_test_indices
from dlscaffold.errors import ConfigError, UserError
from dlscaffold.optim import check_optim
from dlscaffold.project import Project, load_project
from dlscaffold.registry import Registry, build_registries



@dataclass
class Prepared:
    config: Config
    project: Project
    losses: Registry
    evals: Registry
    config_path: Path


def _check_paths(raw: dict[str, Any], base: Path) -> list[str]:
    dl = raw.get("dataloading_params")
    problems = []
    if isinstance(dl, dict):
        for key in ("dataset_path", "idx_dict_path"):
            value = dl.get(key)
            if isinstance(value, str) and value:
                path = Path(value).expanduser()
                path = path if path.is_absolute() else base / path
                if not path.exists():
                    problems.append(f"dataloading_params.{key}: found '{value}', which does not exist; expected an existing path (relative paths start at {base})")
    return problems


def prepare(config_path: Path, overrides: list[str] = (), project_dir: Path | None = None) -> Prepared:
    """Validate a config against its project; raise one :class:`ConfigError` listing every problem.

    Args:
        config_path: the YAML file.
        overrides: dotted ``key=value`` overrides.
        project_dir: folder with ``models.py`` etc.; default: the config file's folder.
    """
    config_path = Path(config_path)
    raw = load_raw(config_path, overrides)
    base = config_path.resolve().parent
    project = load_project(project_dir or base)
    losses, evals = build_registries(project.losses, project.evals)
    config, problems = validate_raw(raw)
    problems += _check_paths(raw, base)
    problems += check_info_flow(raw, project, losses, evals, base)
    if config is not None:
        problems += check_optim(config.training_params)
    if problems:
        raise ConfigError(*problems)
    return Prepared(resolve_paths(config, base), project, losses, evals, config_path)


def build_dataset(prepared: Prepared) -> Any:
    """``CustomDataSet(cfg)`` with the validated config as a plain dict (paths absolute)."""
    dataset = prepared.project.dataset_class(prepared.config.to_dict())
    if len(dataset) == 0:
        raise UserError("CustomDataSet: the dataset is empty; check dataloading_params.dataset_path")
    return dataset


def load_split(config: Config, dataset: Any, saved: Path | None = None) -> dict[str, Any]:
    """The ``idx_dict``: from ``saved`` (a run folder), ``idx_dict_path``, or made from the seed.

    Points the project marks as test points (``test_indices()``) are left out of train / val / dev
    and kept under ``test``. The dataset gets the split as its ``idx_dict`` attribute.
    """
    dl = config.dataloading_params
    source = saved or dl.idx_dict_path
    test = project_test_indices(dataset)
    if source is not None:
        idx_dict = load_idx_dict(source, len(dataset))
    elif test is None:
        idx_dict = make_idx_dict(len(dataset), dl.val_ratio, dl.dev_num, config.training_params.seed)
    else:
        test_set = set(test)
        pool = [i for i in range(len(dataset)) if i not in test_set]
        split = make_idx_dict(len(pool), dl.val_ratio, dl.dev_num, config.training_params.seed)
        idx_dict = {s: [pool[i] for i in split[s]] for s in ("train", "val", "dev")}
        idx_dict.update(num_points=len(dataset), seed=split["seed"])
    if test is not None:
        idx_dict["test"] = sorted(test)
    dataset.idx_dict = idx_dict
    return idx_dict
