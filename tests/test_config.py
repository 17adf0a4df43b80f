"""Config validation: every problem at once, one line each, before anything is built or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_config

from dlscaffold.config import load_config, safe_run_notes, validate_raw
from dlscaffold.errors import ConfigError, UserError
from dlscaffold.prepare import prepare


def problems_of(config: Path, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        prepare(config, list(overrides))
    return info.value.problems


def test_five_independent_mistakes_give_five_lines_exit_2_and_no_run_folder(toy: Path) -> None:
    config = write_config(
        toy,
        "bad.yml",
        training_params__lrn_rat=0.01,  # misspelled key
        dataloading_params__batch_size="many",  # wrong type
        dataloading_params__val_ratio=1.5,  # out of range
        info_flow__Classifier__inputs={"encoding": "Encodr"},  # unknown source
        info_flow__Decoder__losses={  # unknown loss
            "MSEE": {"inputs": {"reconstruction": "Decoder", "features": "dataset"}}
        },
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
    problems = problems_of(
        write_config(
            toy,
            "bad.yml",
            info_flow__Encoder__init_args={"in_dim": 8, "enc_dimm": 4},
            info_flow__Classifier__inputs={"encoding": "Decoder"},
            info_flow__Decoder__losses={"MSE": {"inputs": {"reconstruction": "Decoder"}}},
            info_flow__Decoder__evals={"MultinomialAccuracy": {"inputs": {"x": "Decoder", "y": "dataset"}}},
            info_flow__Typo={"inputs": {"features": "dataset"}},
        )
    )
    assert problems == [
        "info_flow.Encoder.init_args: unexpected 'enc_dimm' (did you mean 'enc_dim'?); missing required 'enc_dim'; "
        "Encoder() takes (in_dim, enc_dim)",
        "info_flow.Classifier.inputs.encoding: source 'Decoder' is built after this model; expected 'dataset' or a "
        "model listed earlier: dataset, Encoder",
        "info_flow.Decoder.losses.MSE.inputs: found 1 input(s); expected 2: MSE(prediction, target)",
        "info_flow.Typo: unknown model 'Typo'; available: Classifier, Decoder, Encoder "
        "(from get_ref_model_dict() in models.py)",
    ]


def test_forward_arguments_and_model_dir_are_checked(toy: Path, tmp_path: Path) -> None:
    problems = problems_of(
        write_config(
            toy,
            "bad.yml",
            info_flow__Encoder__inputs={"featurez": "dataset"},
            info_flow__Decoder__model_dir=str(tmp_path / "no_such_run"),
        )
    )
    assert problems[0].startswith("info_flow.Encoder.inputs: unexpected 'featurez' (did you mean 'features'?)")
    assert problems[1] == (
        f"info_flow.Decoder.model_dir: found '{tmp_path / 'no_such_run'}', which does not exist; "
        "expected an earlier run's folder"
    )


def test_overrides_are_validated_like_the_file(toy: Path) -> None:
    problems = problems_of(toy / "config.yml", "training_params.lrn_rat=3e-4", "training_params.batch_size=2")
    assert problems[0].startswith("training_params.lrn_rat: unknown key; did you mean 'lrn_rate'?")
    assert problems[1] == "training_params.batch_size: unknown key; it belongs in dataloading_params"
    config = load_config(toy / "config.yml", ["training_params.lrn_rate=3e-4", "info_flow.Encoder.init_args.enc_dim=6"])
    assert config.training_params.lrn_rate == pytest.approx(3e-4)
    assert config.info_flow["Encoder"].init_args["enc_dim"] == 6
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(toy / "config.yml", ["training_params.lrn_rate"])


@pytest.mark.parametrize(
    ("section", "key", "meant"),
    [
        ("logging_params", "loggers", "trackers"),  # the closest spelling would be log_images
        ("logging_params", "Logger", "trackers"),
        ("logging_params", "tracking", "trackers"),
        ("logging_params", "log_dir", "logging_dir"),
        ("training_params", "lr", "lrn_rate"),
        ("training_params", "learning_rate", "lrn_rate"),
        ("training_params", "epochs", "max_training_epochs"),
        ("training_params", "max_epochs", "max_training_epochs"),
        ("training_params", "weight_decay", "regularization_weight"),
        ("training_params", "clip_grad_norm", "grad_clip_norm"),
        ("training_params", "scheduler", "lr_scheduler"),
        ("training_params", "use_gpu", "use_GPU"),  # case only
        ("dataloading_params", "batchsize", "batch_size"),
        ("dataloading_params", "workers", "num_workers"),
        ("dataloading_params", "data_dir", "dataset_path"),
        ("training_params", "batch", "dataloading_params.batch_size"),  # a synonym of another section's key
    ],
)
def test_did_you_mean_knows_what_other_tools_call_a_key(section: str, key: str, meant: str) -> None:
    _, problems = validate_raw({section: {key: 1}, "info_flow": {"Model": {}}})
    assert problems[0].startswith(f"{section}.{key}: unknown key; did you mean '{meant}'? expected one of: ")


def test_a_synonym_names_only_a_key_of_the_section_it_is_in() -> None:
    # "kwargs" is a model's init_args but a loss's options; "weights" (a model's model_dir) in a loss: weight
    flow = {"M": {"kwargs": {}, "losses": {"MSE": {"inputs": {"x": "dataset"}, "kwargs": {}, "weights": 2}}}}
    _, problems = validate_raw({"info_flow": flow})
    assert [p.split("? ")[0] for p in problems] == [
        "info_flow.M.kwargs: unknown key; did you mean 'init_args'",
        "info_flow.M.losses.MSE.kwargs: unknown key; did you mean 'options'",
        "info_flow.M.losses.MSE.weights: unknown key; did you mean 'weight'",
    ]


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
    problems = problems_of(
        write_config(
            toy,
            "bad.yml",
            training_params__optimizer={"name": "Adamm", "kwargs": {}},
            training_params__lr_scheduler={"name": "StepLR", "kwargs": {"step_sise": 2}},
        )
    )
    assert problems[0].startswith("training_params.optimizer.name: unknown optimizer 'Adamm'; did you mean 'Adam'?")
    assert problems[1].startswith("training_params.lr_scheduler.kwargs:") and "step_sise" in problems[1]


def test_a_misspelled_required_section_is_one_problem(toy: Path) -> None:
    raw = (toy / "config.yml").read_text().replace("info_flow:", "info_flows:")
    (toy / "bad.yml").write_text(raw)
    with pytest.raises(ConfigError) as info:
        load_config(toy / "bad.yml")
    assert len(info.value.problems) == 1 and "did you mean 'info_flow'?" in info.value.problems[0]


# ------------------------------------------------------------- hostile files and overrides: one line each


def load_problems(path: Path, *overrides: str) -> list[str]:
    with pytest.raises(UserError) as info:
        load_config(path, list(overrides))
    return info.value.problems


def test_a_duplicate_key_names_the_file_line_and_key_path(toy: Path) -> None:
    text = (toy / "config.yml").read_text().replace("  lrn_rate: 0.01\n", "  lrn_rate: 0.01\n  lrn_rate: 0.02\n")
    (toy / "dup.yml").write_text(text)
    line = text.splitlines().index("  lrn_rate: 0.02") + 1
    assert load_problems(toy / "dup.yml") == [
        f"{toy / 'dup.yml'}:{line}:3: training_params.lrn_rate: duplicate key (first at line {line - 1}); "
        "expected each key once"
    ]
    (toy / "merge.yml").write_text("base: &b {x: 1}\nother: {<<: *b, x: 2}\n")  # a merge key may be overridden
    assert "base: unknown key" in load_problems(toy / "merge.yml")[0]


def test_alias_bombs_and_deep_nesting_are_refused_before_they_grow(toy: Path) -> None:
    levels = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]  # 10**12 values
    (toy / "bomb.yml").write_text("\n".join(levels) + "\n")
    (toy / "deep.yml").write_text("x: " + "[" * 50_000 + "]" * 50_000 + "\n")
    (toy / "loop.yml").write_text("x: &a [1, *a]\n")
    (bomb,), (deep,), (loop,) = (load_problems(toy / name) for name in ("bomb.yml", "deep.yml", "loop.yml"))
    assert "found more than 100000 values (an alias counts as every value it repeats)" in bomb
    assert "found values nested more than 100 levels deep; expected at most 100" in deep
    assert "alias *a repeats a value that contains it" in loop
    (problem,) = load_problems(toy / "config.yml", "dataloading_params.dataset_args=" + "[" * 5000)
    assert problem.startswith("override 'dataloading_params.dataset_args=[[[[[[")
    assert problem.endswith(
        "... (5032 characters)': found values nested more than 100 levels deep; expected at most 100"
    )


def test_unreadable_files_are_one_line_naming_the_file(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (toy / "latin1.yml").write_bytes(b"logging_params:\n  run_notes: caf\xe9\n")
    assert load_problems(toy / "latin1.yml") == [
        f"{toy / 'latin1.yml'}:2: found the byte 0xe9, which is not UTF-8; expected a UTF-8 text file "
        "(save it as UTF-8)"
    ]
    assert load_problems(toy) == [f"{toy}: found a folder; expected a config file, e.g. {toy / 'config.yml'}"]
    for text, found in [("- 1\n", "a list ([1])"), ("3\n", "a single value (3)"), ("", "an empty file")]:
        (toy / "odd.yml").write_text(text)
        assert load_problems(toy / "odd.yml") == [
            f"{toy / 'odd.yml'}: found {found}; expected a mapping of sections: "
            "dataloading_params, training_params, logging_params, info_flow"
        ]

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("dlscaffold.config.yaml_reader.open", refuse, raising=False)
    assert load_problems(toy / "config.yml") == [
        f"{toy / 'config.yml'}: cannot read the file (Permission denied); expected a readable config file"
    ]


def test_yaml_values_that_are_no_plain_data_are_refused(toy: Path) -> None:
    cases = {
        "run_notes: !!binary aGVsbG8=": "found a !!binary value; expected plain values",
        "run_notes: !!python/name:os.system": "invalid YAML: could not determine a constructor",
        'run_notes: "\\ud800"': "found an escaped surrogate",
        "seed: " + "1" * 5000: "which cannot be read as int",
        "run_notes: a\0b": "found the character U+0000, which YAML does not allow",
    }
    for text, expected in cases.items():
        (toy / "odd.yml").write_text(f"info_flow: {{Encoder: {{train: 0}}}}\nx:\n  {text}\n")
        (problem,) = load_problems(toy / "odd.yml")
        assert problem.startswith(f"{toy / 'odd.yml'}:3:") and expected in problem, problem
    (toy / "date.yml").write_text("info_flow: {Encoder: {train: 0}}\nlogging_params: {run_notes: 2024-05-01}\n")
    assert load_config(toy / "date.yml").logging_params.run_notes == "2024-05-01"  # a date stays text


def test_a_broken_override_value_names_the_override(toy: Path) -> None:
    assert load_problems(toy / "config.yml", "training_params.lrn_rate=[") == [
        "override 'training_params.lrn_rate=[': invalid YAML value: while parsing a flow node, expected the node "
        "content, but found '<stream end>' (column 27); expected a YAML value, e.g. 3e-4, true, [1, 2] or 'text'"
    ]
    assert load_problems(toy / "config.yml", "training_params={seed: 1, seed: 2}") == [
        "override 'training_params={seed: 1, seed: 2}': training_params.seed: duplicate key (first at line 1); "
        "expected each key once"
    ]
    assert load_problems(toy / "config.yml", "training_params.seed.x=1") == [
        "override 'training_params.seed.x=1': training_params.seed holds a int; expected a mapping on the key path"
    ]


def test_numbers_are_finite_in_range_and_no_true_false(toy: Path) -> None:
    problems = load_problems(
        toy / "config.yml",
        "dataloading_params.batch_size=true",
        "training_params.seed=1e20",
        "training_params.lrn_rate=.nan",
        "training_params.beta1=.inf",
        "dataloading_params.num_workers=300",
        "info_flow.Decoder.losses.MSE.weight=-.inf",
        f"training_params.val_every={2**63}",
        "training_params.grad_clip_norm=false",
    )
    assert problems == [
        "dataloading_params.num_workers: found 300 (int); expected less than or equal to 256",
        "dataloading_params.batch_size: found True (bool); expected an integer, not true/false",
        "training_params.seed: found 1e+20 (float); expected an integer of at most 9223372036854775807",
        "training_params.lrn_rate: found nan (float); expected a finite number",
        "training_params.beta1: found inf (float); expected a finite number",
        "training_params.val_every: found 9223372036854775808 (int); expected less than or equal to "
        "9223372036854775807",
        "training_params.grad_clip_norm: found False (bool); expected a number, not true/false",
        "info_flow.Decoder.losses.MSE.weight: found -inf (float); expected a finite number",
    ]
    config = load_config(toy / "config.yml", ["dataloading_params.batch_size=1e2", "dataloading_params.dev_num='8'"])
    assert (config.dataloading_params.batch_size, config.dataloading_params.dev_num) == (100, 8)


def test_structural_messages_name_what_to_write(toy: Path) -> None:
    problems = load_problems(
        toy / "config.yml",
        "logging_params.logging_dir=[a]",
        "training_params.optimizer=Adam",
        "info_flow.Decoder.losses.MSE.inputs={}",
    )
    assert problems == [
        "training_params.optimizer: found 'Adam' (str); expected a mapping",
        "logging_params.logging_dir: found ['a'] (list); expected a path (text)",
        "info_flow.Decoder.losses.MSE.inputs: found {} (dict); expected at least one entry",
    ]
    _, problems = validate_raw({"info_flow": {"Encoder": {"init_args": {1: 2}}}})  # from Python, not YAML
    assert problems == ["info_flow.Encoder.init_args.1: found the key 1 (int); expected text keys (quote it: '1')"]
    config = load_config(toy / "config.yml", ["dataloading_params.dataset_args={1: a, true: b, null: c, 1.5: d}"])
    assert config.dataloading_params.dataset_args == {"1": "a", "true": "b", "null": "c", "1.5": "d"}  # keys are text
    (toy / "empty.yml").write_text("logging_params:\ntraining_params:\ninfo_flow: {Encoder: {train: 0}}\n")
    assert load_config(toy / "empty.yml").logging_params.run_notes == ""  # an empty section takes the defaults


def test_aliases_are_copies_so_an_override_changes_one_place(toy: Path) -> None:
    text = (toy / "config.yml").read_text().replace("init_args: {enc_dim: 4}", "init_args: &c {enc_dim: 4}")
    text = text.replace("init_args: {enc_dim: 4, out_dim: 8}", "init_args: {<<: *c, out_dim: 8}")
    (toy / "alias.yml").write_text(text)
    config = load_config(toy / "alias.yml", ["info_flow.Classifier.init_args.enc_dim=6"])
    assert config.info_flow["Classifier"].init_args == {"enc_dim": 6}
    assert config.info_flow["Decoder"].init_args == {"enc_dim": 4, "out_dim": 8}


def test_safe_run_notes_cuts_long_notes_to_100_bytes() -> None:
    assert safe_run_notes("  first try / lr 3e-4  ") == "first_try_lr_3e-4"
    assert safe_run_notes("x" * 300) == "x" * 100
    cut = safe_run_notes("é" * 300)  # two bytes each: never cut inside a character
    assert cut == "é" * 50 and len(cut.encode()) == 100
    assert safe_run_notes("a\0b/../c") == "a_b_.._c" and safe_run_notes("///") == ""
    assert len(safe_run_notes("🚀 run " * 40).encode()) <= 100
