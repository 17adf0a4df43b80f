"""The config's JSON Schema (``dlscaffold schema``, the template's ``config.schema.json``): it
accepts every config the loader accepts (the template's, the examples', the benchmarks', the older
tool's annotated config, configs of training tests), refuses what the loader refuses (misspelled
keys, wrong types), leaves model / loss / eval names free, and the template ships the current one."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import copy_project, signalling_config, write_config
from pydantic import TypeAdapter
from test_seed_config import SEED_CONFIG

from dlscaffold.cli import main
from dlscaffold.config.numbers import Float, Int
from dlscaffold.config.schema import DataloadingParams
from dlscaffold.config.validation import validate_raw
from dlscaffold.config.yaml_reader import parse_yaml
from dlscaffold.tools.schema import BOOL_TEXT, FLOAT_TEXT, INT_TEXT, config_schema, field_comments, schema_text

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template"
REFRESH = "run `dlscaffold schema -o template/config.schema.json` and commit the file"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: jsonschema.Draft7Validator, raw: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(raw)]


def both_readings(text: str) -> list[Any]:
    """The config as the loader reads it (``1e-4`` a float) and as plain YAML 1.1 does (a string)."""
    return [parse_yaml(text), yaml.safe_load(text)]


def template_raw() -> dict[str, Any]:
    return parse_yaml((TEMPLATE / "config.yml").read_text())


# ---------------------------------------------------------------------------------- the file


def test_the_schema_is_draft7_stable_and_written_as_2_space_json() -> None:
    schema = config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#" and schema["title"]
    assert "$id" not in schema and config_schema() == schema
    text = schema_text()
    assert text == schema_text() and text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "$schema"') and json.loads(text) == schema
    assert list(schema["definitions"]) == sorted(schema["definitions"])


def test_the_template_ships_the_current_schema() -> None:
    shipped = json.loads((TEMPLATE / "config.schema.json").read_text())
    assert shipped == config_schema(), f"template/config.schema.json is out of date: {REFRESH}"


def test_the_template_config_names_the_schema_on_its_first_line() -> None:
    first = (TEMPLATE / "config.yml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=config.schema.json"
    copier = yaml.safe_load((REPO / "copier.yml").read_text())
    assert "config.schema.json" not in copier.get("_skip_if_exists", [])  # updates bring new schemas


def test_keys_carry_their_comment_type_range_and_default() -> None:
    defs = config_schema()["definitions"]
    epochs = defs["TrainingParams"]["properties"]["max_training_epochs"]
    assert epochs["default"] == 10 and {"type": "integer", "minimum": 1}.items() <= epochs["anyOf"][0].items()
    ratio = defs["DataloadingParams"]["properties"]["val_ratio"]["anyOf"][0]
    assert (ratio["minimum"], ratio["exclusiveMaximum"]) == (0.0, 1.0)
    precision = defs["TrainingParams"]["properties"]["precision"]
    assert precision["enum"] == ["fp32", "bf16", "fp16", "auto"] and "bf16" in precision["description"]
    assert defs["LoggingParams"]["properties"]["trackers"]["default"] == ["tensorboard"]  # a default_factory
    assert defs["DataloadingParams"]["properties"]["device_data"]["description"].startswith("Stack each split")
    assert defs["LossSpec"]["description"].startswith("One loss term. `inputs` bind")  # the class docstring
    assert "title" not in epochs  # no "Max Training Epochs"


def test_field_comments_are_the_lines_directly_above_and_beside_a_field() -> None:
    class Example:
        # a comment that stands apart

        # the first line
        # and the second
        first: int = 1
        second: str = "x"  # beside it
        third: int = 3
        # not above a field

    assert field_comments(Example) == {"first": "the first line and the second", "second": "beside it"}


# ----------------------------------------------------------------- what the loader accepts


def test_the_project_configs_validate(validator: jsonschema.Draft7Validator) -> None:
    paths = [
        TEMPLATE / "config.yml",
        *sorted((REPO / "examples" / "cifar10").glob("config*.yml")),
        REPO / "examples" / "cifar10" / "seed_config.yml",
        *sorted((REPO / "benchmarks").glob("*/config.yml")),
        REPO / "tests" / "toyproject" / "config.yml",
    ]
    assert len(paths) >= 8
    for path in paths:
        for raw in both_readings(path.read_text()):
            assert validate_raw(raw)[1] == [], path
            assert schema_errors(validator, raw) == [], path


def test_the_older_tools_annotated_config_validates(validator: jsonschema.Draft7Validator) -> None:
    text = SEED_CONFIG.replace("DATASET_PATH", "data").replace("LOGGING_DIR", "logs")
    for raw in both_readings(text):
        assert schema_errors(validator, raw) == []


def test_configs_of_training_tests_validate(validator: jsonschema.Draft7Validator, tmp_path: Path) -> None:
    """The toy project's configs that tests/test_ema.py, test_hooks_run.py, test_multi_model.py and
    conftest.signalling_config train with."""
    toy = copy_project("toyproject", tmp_path / "toy")
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    teacher = {
        "ema_of": "Classifier",
        "decay": 0.9,
        "evals": {"MultinomialAccuracy": flow["Classifier"]["evals"]["MultinomialAccuracy"]},
    }
    groups = [{"params": "*.bias", "lr_scale": 4, "weight_decay": 0}, {"params": "net.0.*", "epochs": [1, 2]}]
    hooks = [
        {"name": "Grid", "event": "step", "every": 10, "options": {"rows": 2}},
        {"name": "StopAt", "event": "step"},
    ]
    configs = [
        write_config(toy, "ema.yml", info_flow={**flow, "Teacher": teacher}),
        write_config(
            toy, "groups.yml", training_params__regularization_weight=0.01, info_flow__Encoder__param_groups=groups
        ),
        write_config(toy, "hooks.yml", dataloading_params__batch_size=8, training_params__hooks=hooks),
        write_config(
            toy, "steps.yml", training_params__val_every={"steps": 5}, training_params__save_every={"epochs": 2}
        ),
        signalling_config(toy, at=3),
    ]
    for path in configs:
        raw = parse_yaml(path.read_text())
        assert validate_raw(raw)[1] == [], path
        assert schema_errors(validator, raw) == [], path


# (dotted key, value, whether the loader accepts it): the schema must give the same verdict
VERDICTS = [
    ("training_params.lrn_rate", "1e-3", True),
    ("training_params.lrn_rate", " 0.5", True),
    ("training_params.lrn_rate", "inf", False),
    ("training_params.lrn_rate", 0, False),
    ("training_params.max_training_epochs", "20", True),
    ("training_params.max_training_epochs", 1e3, True),
    ("training_params.max_training_epochs", "many", False),
    ("training_params.max_training_epochs", 10.5, False),
    ("training_params.max_training_epochs", True, False),
    ("training_params.max_training_epochs", None, False),
    ("training_params.use_GPU", "yes", True),
    ("training_params.use_GPU", 0, True),
    ("training_params.use_GPU", 2, False),
    ("training_params.use_GPU", None, False),
    ("training_params.precision", "bf16", True),
    ("training_params.precision", "fp64", False),
    ("training_params.val_every", {"steps": 5}, True),
    ("training_params.val_every", {"epochs": 2}, True),
    ("training_params.val_every", {"step": 5}, False),
    ("training_params.val_every", "2", False),
    ("training_params.optimizer", {"name": "SGD", "kwargs": None}, True),
    ("training_params.optimizer", {"name": "SGD", "kwarg": {}}, False),
    ("training_params.hooks", [{"name": "Grid"}], False),
    ("training_params.grad_clip_norm", None, True),
    ("training_params.grad_clip_norm", 0, False),
    ("training_params", None, True),
    ("training_params.lrn_rat", 0.1, False),
    ("training_param", {}, False),
    ("dataloading_params.dataset_args", None, True),
    ("dataloading_params.num_workers", 300, False),
    ("logging_params.run_notes", 3, True),
    ("logging_params.run_notes", None, True),
    ("logging_params.run_notes", True, False),
    ("logging_params.logging_dir", None, False),
    ("info_flow.DigitClassifier.train", 0, True),
    ("info_flow.DigitClassifier.train", "yes", False),
    ("info_flow.DigitClassifier.epoch", "best", True),
    ("info_flow.DigitClassifier.epoch", "4", True),
    ("info_flow.DigitClassifier.epoch", -1, False),
    ("info_flow.DigitClassifier.epoch", "first", False),
    ("info_flow.DigitClassifier.init_args", None, True),
    ("info_flow.DigitClassifier.init_arg", {}, False),
    ("info_flow.DigitClassifier.param_groups", [{"params": "*.bias", "weight_decay": 0}], True),
    ("info_flow.DigitClassifier.losses.LabelSmoothingNLL.wieght", 1.0, False),
    ("info_flow.DigitClassifier.losses.LabelSmoothingNLL.inputs", None, False),
    ("info_flow.DigitClassifier.losses.AnyProjectLoss", {"inputs": {"x": "DigitClassifier"}}, True),
    ("info_flow.DigitClassifier.evals.torchmetrics.F1Score", {"inputs": {"preds": "DigitClassifier"}}, True),
    ("info_flow.MyOwnModel", {"train": 0, "inputs": {"image": "dataset"}}, True),
    ("info_flow.MyOwnModel", {"trian": 0}, False),
    ("info_flow.MyOwnModel", None, False),
]


def edited(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``raw`` with ``key`` set to ``value``; a key of an ``evals`` entry may hold dots."""
    raw = copy.deepcopy(raw)
    parts = key.split(".")
    if "evals" in parts:
        i = parts.index("evals") + 1
        parts = [*parts[:i], ".".join(parts[i:])]
    node = raw
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return raw


@pytest.mark.parametrize(("key", "value", "accepted"), VERDICTS, ids=[f"{k}={v!r}" for k, v, _ in VERDICTS])
def test_the_schema_accepts_what_the_loader_accepts(
    validator: jsonschema.Draft7Validator, key: str, value: Any, accepted: bool
) -> None:
    raw = edited(template_raw(), key, value)
    assert (validate_raw(raw)[1] == []) is accepted, "the loader's verdict changed: update VERDICTS"
    errors = schema_errors(validator, raw)
    assert (errors == []) is accepted, errors or "the schema accepts what the loader refuses"


NUMBER_TEXTS = ["10", " 10 ", "+5", "-0", "1_000", "10.0", "10.", "10.5", "1e3", "0x10", "1__0", "_1", "", "one"]
FLOAT_TEXTS = ["1e-3", "1E5", ".5", "5.", "+.5e-3", "-.5", "0.5 ", "1.5e+3", "1e", "e5", ".", "inf", "nan", "1,5"]
BOOL_TEXTS = ["true", "False", "YES", "no", "On", "off", "t", "F", "y", "n", "1", "0", " true", "2", "none", "oui"]


@pytest.mark.parametrize(
    ("pattern", "kind", "texts"),
    [(INT_TEXT, Int, NUMBER_TEXTS), (FLOAT_TEXT, Float, NUMBER_TEXTS + FLOAT_TEXTS), (BOOL_TEXT, bool, BOOL_TEXTS)],
    ids=["int", "float", "bool"],
)
def test_text_patterns_match_what_pydantic_reads(pattern: str, kind: Any, texts: list[str]) -> None:
    adapter = TypeAdapter(kind, config=DataloadingParams.model_config) if kind is not bool else TypeAdapter(bool)
    for text in texts:
        try:
            adapter.validate_python(text)
            reads = True
        except ValueError:
            reads = False
        assert bool(re.search(pattern, text)) is reads, f"{text!r}: pydantic reads it: {reads}"


# ------------------------------------------------------------------------- the command line


def test_schema_prints_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == config_schema() and out == schema_text()


def test_schema_o_writes_the_file_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "config.schema.json"
    target.write_text("old")
    assert main(["schema", "-o", str(target)]) == 0
    assert target.read_text() == schema_text()
    assert capsys.readouterr().out.strip() == f"Wrote the config's JSON Schema to {target}"
    assert [p.name for p in tmp_path.iterdir()] == ["config.schema.json"]  # no temporary file left


def test_schema_o_refuses_a_folder_or_a_missing_one_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "-o", str(tmp_path)]) == 2
    assert main(["schema", "-o", str(tmp_path / "missing" / "schema.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "found a folder" in lines[0] and "cannot write the schema" in lines[1]


def test_a_generated_project_names_the_schema_beside_its_config(
    tmp_path: Path, git_identity: None, validator: jsonschema.Draft7Validator
) -> None:
    project = tmp_path / "p"
    assert main(["new", str(project), "--defaults"]) == 0
    config = (project / "config.yml").read_text()
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", config.splitlines()[0])
    assert match and (project / match.group(1)).is_file()
    assert json.loads((project / match.group(1)).read_text()) == config_schema()
    assert schema_errors(validator, parse_yaml(config)) == []
