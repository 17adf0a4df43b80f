"""Config validation: every problem at once, one line each, before anything is built or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_config

from dlscaffold.config import load_config
from dlscaffold.errors import ConfigError, UserError
from dlscaffold.prepare import prepare


def problems_of(config: Path, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        prepare(config, list(overrides))
    return info.value.problems


def test_five_independent_mistakes_give_five_lines_exit_2_and_no_run_folder(toy: Path) -> None:
    config = write_config(
        toy, "bad.yml",
        training_params__lrn_rat=0.01,  # misspelled key
        dataloading_params__batch_size="many",  # wrong type
        dataloading_params__val_ratio=1.5,  # out of range
        info_flow__Classifier__inputs={"encoding": "Encodr"},  # unknown source
        info_flow__Decoder__losses={"MSEE": {"inputs": {"reconstruction": "Decoder", "features": "dataset"}}},  # unknown loss
    )
    result = run_cli("train", str(config), cwd=toy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2
    assert len(errors) == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert not (toy / "runs").exists()
    text = "\n".join(errors)
    assert "training_params.lrn_rat: unknown key; did you mean 'lrn_rate'?" in text
    assert "dataloading_params.batch_size: found 'many' (str); expected a valid integer" in text
    assert "dataloading_params.val_ratio: found 1.5 (float); expected less than 1" in text
    assert "info_flow.Classifier.inputs.encoding: unknown source 'Encodr'; did you mean 'Encoder'?" in text
    assert "info_flow.Decoder.losses.MSEE: unknown loss 'MSEE'; did you mean 'MSE'? available:" in text


def test_debug_flag_shows_the_traceback(toy: Path) -> None:
    config = write_config(toy, "bad.yml", training_params__lrn_rate=-1)
    result = run_cli("train", str(config), "--debug", cwd=toy)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_model_problems_name_the_key_and_what_fits(toy: Path) -> None:
    problems = problems_of(write_config(
        toy, "bad.yml",
        info_flow__Encoder__init_args={"in_dim": 8, "enc_dimm": 4},
        info_flow__Classifier__inputs={"encoding": "Decoder"},
        info_flow__Decoder__losses={"MSE": {"inputs": {"reconstruction": "Decoder"}}},
        info_flow__Decoder__evals={"MultinomialAccuracy": {"inputs": {"x": "Decoder", "y": "dataset"}}},
        info_flow__Typo={"inputs": {"features": "dataset"}},
    ))
    assert problems == [
        "info_flow.Encoder.init_args: unexpected 'enc_dimm' (did you mean 'enc_dim'?); missing required 'enc_dim'; Encoder() takes (in_dim, enc_dim)",
        "info_flow.Classifier.inputs.encoding: source 'Decoder' is built after this model; expected 'dataset' or a model listed earlier: dataset, Encoder",
        "info_flow.Decoder.losses.MSE.inputs: found 1 input(s); expected 2: MSE(prediction, target)",
        "info_flow.Typo: unknown model 'Typo'; available: Classifier, Decoder, Encoder (from get_ref_model_dict() in models.py)",
    ]


def test_forward_arguments_and_model_dir_are_checked(toy: Path, tmp_path: Path) -> None:
    problems = problems_of(write_config(
        toy, "bad.yml",
        info_flow__Encoder__inputs={"featurez": "dataset"},
        info_flow__Decoder__model_dir=str(tmp_path / "no_such_run"),
    ))
    assert problems[0].startswith("info_flow.Encoder.inputs: unexpected 'featurez' (did you mean 'features'?)")
    assert problems[1] == f"info_flow.Decoder.model_dir: found '{tmp_path / 'no_such_run'}', which does not exist; expected an earlier run's folder"


def test_overrides_are_validated_like_the_file(toy: Path) -> None:
    problems = problems_of(toy / "config.yml", "training_params.lrn_rat=3e-4", "training_params.batch_size=2")
    assert problems[0].startswith("training_params.lrn_rat: unknown key; did you mean 'lrn_rate'?")
    assert problems[1] == "training_params.batch_size: unknown key; it belongs in dataloading_params"
    config = load_config(toy / "config.yml", ["training_params.lrn_rate=3e-4", "info_flow.Encoder.init_args.enc_dim=6"])
    assert config.training_params.lrn_rate == pytest.approx(3e-4)
    assert config.info_flow["Encoder"].init_args["enc_dim"] == 6
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(toy / "config.yml", ["training_params.lrn_rate"])


def test_relative_paths_resolve_against_the_config_folder(toy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = load_config(toy / "config.yml", cwd=elsewhere)
    assert config.logging_params.logging_dir == toy / "runs"
    # ...while a relative path typed on the command line starts at the working directory.
    config = load_config(toy / "config.yml", ["logging_params.logging_dir=logs"], cwd=elsewhere)
    assert config.logging_params.logging_dir == elsewhere / "logs"


def test_seed_defaults_and_yaml_number_forms(toy: Path) -> None:
    path = toy / "mini.yml"
    path.write_text("training_params: {lrn_rate: 1e-3}\ninfo_flow: {Encoder: {train: 0}}\n")
    config = load_config(path)
    assert config.training_params.lrn_rate == 1e-3  # YAML 1.1 alone would read "1e-3" as a string
    assert config.info_flow["Encoder"].train is False
    assert (config.training_params.val_every, config.training_params.save_every) == (1, 1)
    assert config.training_params.optimizer is None  # the seed's Adam


def test_unreadable_inputs_get_one_line(toy: Path) -> None:
    (toy / "broken.yml").write_text("training_params: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(toy / "broken.yml")
    with pytest.raises(UserError, match="config file not found"):
        load_config(toy / "missing.yml")
    result = run_cli("train", "missing.yml", cwd=toy)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


def test_optimizer_and_scheduler_names_are_checked(toy: Path) -> None:
    problems = problems_of(write_config(
        toy, "bad.yml",
        training_params__optimizer={"name": "Adamm", "kwargs": {}},
        training_params__lr_scheduler={"name": "StepLR", "kwargs": {"step_sise": 2}},
    ))
    assert problems[0].startswith("training_params.optimizer.name: unknown optimizer 'Adamm'; did you mean 'Adam'?")
    assert problems[1].startswith("training_params.lr_scheduler.kwargs:") and "step_sise" in problems[1]


def test_a_misspelled_required_section_is_one_problem(toy: Path) -> None:
    raw = (toy / "config.yml").read_text().replace("info_flow:", "info_flows:")
    (toy / "bad.yml").write_text(raw)
    with pytest.raises(ConfigError) as info:
        load_config(toy / "bad.yml")
    assert len(info.value.problems) == 1 and "did you mean 'info_flow'?" in info.value.problems[0]
