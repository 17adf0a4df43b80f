"""EMA models (``ema_of``): mean teacher and Lookahead on the toy project, saved, resumed, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SIGNALLING_MODELS, run_dirs_in, write_config

from dlscaffold.api import load_run
from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

EPOCHS = 2
# Reads the Teacher's outputs: an EMA model is an input source like any model.
TEACHER_EVAL = {
    "MultinomialAccuracy": {"logging_name": "acc", "inputs": {"class_logits": "Teacher", "class_idx": "dataset"}}
}


def ema_config(toy: Path, name: str = "ema.yml", **teacher: object) -> Path:
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Teacher"] = {"ema_of": "Classifier", "evals": TEACHER_EVAL, **teacher}
    return write_config(toy, name, info_flow=flow, training_params__max_training_epochs=EPOCHS)


def train(config: Path, *args: str) -> Path:
    logs = config.parent / "runs" / config.stem
    assert main(["train", str(config), f"logging_params.logging_dir={logs}", *args]) == 0
    (run,) = run_dirs_in(logs)
    return run


def weights(run: Path, model: str, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"{model}_{epoch:06d}.pt", weights_only=True)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decay_0_follows_the_student_and_decay_1_keeps_its_initial_weights(toy: Path, capsys) -> None:
    follow = train(ema_config(toy, "follow.yml", decay=0))
    assert "Training Encoder, Classifier, Decoder on" in capsys.readouterr().out  # no optimizer for Teacher
    for epoch in range(EPOCHS + 1):
        assert same(weights(follow, "Teacher", epoch), weights(follow, "Classifier", epoch)), epoch
    assert "Teacher/acc" in read_metrics(follow)[-1]
    saved = yaml.safe_load((follow / "config.yml").read_text())["info_flow"]
    assert saved["Teacher"]["init_args"] == {"enc_dim": 4} and saved["Teacher"]["train"] is False
    assert "ema_of" not in saved["Classifier"]  # other models are written as before

    kept = train(ema_config(toy, "kept.yml", decay=1))
    initial = weights(kept, "Classifier", 0)
    assert not same(initial, weights(kept, "Classifier", EPOCHS))
    for epoch in range(EPOCHS + 1):
        assert same(weights(kept, "Teacher", epoch), initial), epoch


def test_an_average_differs_from_both_and_matches_the_formula(toy: Path) -> None:
    run = train(ema_config(toy, decay=0.9))
    teacher = weights(run, "Teacher", EPOCHS)
    assert not same(teacher, weights(run, "Classifier", EPOCHS))
    assert not same(teacher, weights(run, "Classifier", 0))
    assert same(weights(run, "Teacher", 0), weights(run, "Classifier", 0))
    # the same training without an EMA model: the student trains bit for bit as before
    plain = train(write_config(toy, "plain.yml", training_params__max_training_epochs=EPOCHS))
    assert same(weights(plain, "Classifier", EPOCHS), weights(run, "Classifier", EPOCHS))


def test_write_back_makes_the_student_the_average(toy: Path) -> None:
    run = train(ema_config(toy, decay=0.5, write_back=True))
    plain = train(write_config(toy, "plain.yml", training_params__max_training_epochs=EPOCHS))
    for epoch in range(EPOCHS + 1):
        assert same(weights(run, "Classifier", epoch), weights(run, "Teacher", epoch)), epoch
    assert not same(weights(run, "Classifier", EPOCHS), weights(plain, "Classifier", EPOCHS))


def test_a_run_stopped_mid_epoch_resumes_to_the_same_average(toy: Path, tmp_path: Path, monkeypatch) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(SIGNALLING_MODELS)
    teacher = {"ema_of": "Classifier", "decay": 0.8, "every": 2, "decay_ramp": 1.0, "evals": TEACHER_EVAL}
    flow = {"SignalAt": {"train": 0, "init_args": {"at": 9}, "inputs": {"features": "dataset", "step": "trainer"}}}
    flow.update(yaml.safe_load((toy / "config.yml").read_text())["info_flow"], Teacher=teacher)
    flow["Encoder"]["inputs"] = {"features": "SignalAt"}
    config = write_config(  # 180 points in batches of 16: 12 steps an epoch, step 9 is inside epoch 1
        toy,
        "signal.yml",
        info_flow=flow,
        dataloading_params__batch_size=16,
        training_params__max_training_epochs=EPOCHS,
    )
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("RESUMED")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 143
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert [p.name for p in (run / "checkpoints").glob("trainer_*")] == ["trainer_000000_000010.pt"]  # 10 batches done
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run), "--project", str(toy)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert read_metrics(run) == read_metrics(reference)
    for name in ("Classifier", "Teacher"):
        assert same(weights(run, name, EPOCHS), weights(reference, name, EPOCHS)), name
    assert not same(weights(run, "Teacher", EPOCHS), weights(run, "Classifier", EPOCHS))


def test_evaluate_and_load_run_read_the_ema_model(toy: Path) -> None:
    run = train(ema_config(toy, decay=0.9))
    out = toy / "eval.json"
    assert main(["evaluate", str(run), "--epoch", str(EPOCHS), "--json", str(out), "--project", str(toy)]) == 0
    val_row = [r for r in read_metrics(run) if r["split"] == "val"][-1]
    assert json.loads(out.read_text())["metrics"]["Teacher/acc"] == pytest.approx(val_row["Teacher/acc"])
    loaded = load_run(run, epoch=EPOCHS, project=toy)
    teacher = loaded.models["Teacher"]
    assert same(teacher.state_dict(), weights(run, "Teacher", EPOCHS)) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    batch = [loaded.dataset()[i] for i in loaded.split["val"][:4]]
    outputs = loaded.forward(batch)
    expected = teacher(outputs["Encoder"]["encoding"])["class_logits"]
    assert torch.equal(outputs["Teacher"]["class_logits"], expected)
    # a later run loads the average by model_dir (its weights, not the student's copy)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Teacher"] = {"ema_of": "Classifier", "model_dir": str(run), "epoch": EPOCHS}
    later = train(write_config(toy, "later.yml", info_flow=flow, training_params__max_training_epochs=1))
    assert same(weights(later, "Teacher", 0), weights(run, "Teacher", EPOCHS))


BAD_TEACHERS = {
    "Unknown": (
        {"ema_of": "Clasifier"},
        "info_flow.Unknown.ema_of: unknown model 'Clasifier'; did you mean 'Classifier'?",
    ),
    "OfFrozen": ({"ema_of": "Decoder"}, "info_flow.OfFrozen.ema_of: 'Decoder' is not trained (train: 0)"),
    "Losses": (
        {
            "ema_of": "Classifier",
            "losses": {"MultinomialNLL": {"inputs": {"a": "Losses.class_logits", "b": "dataset.class_idx"}}},
        },
        "info_flow.Losses.losses: an EMA model is never trained by gradients",
    ),
    "Trained": ({"ema_of": "Classifier", "train": 1}, "info_flow.Trained.train: an EMA model is never trained"),
    "OwnArgs": (
        {"ema_of": "Classifier", "init_args": {"enc_dim": 5}},
        "info_flow.OwnArgs.init_args: an EMA model is a copy",
    ),
    "Decay": ({"ema_of": "Classifier", "decay": 1.5}, "info_flow.Decay.decay: found 1.5"),
    "Every": ({"ema_of": "Classifier", "every": 0}, "info_flow.Every.every: found 0"),
}


def test_bad_ema_models_are_one_line_each(toy: Path, capsys) -> None:
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow = {
        "Early": {"ema_of": "Classifier"},  # listed before its source
        **flow,
        **{name: spec for name, (spec, _) in BAD_TEACHERS.items()},
    }
    flow["Decoder"]["train"] = 0
    flow["Encoder"]["decay"] = 0.5  # not an EMA model
    config = write_config(toy, "bad.yml", info_flow=flow)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (toy / "runs").exists()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    expected = [
        "info_flow.Early.ema_of: 'Classifier' is listed after Early",
        "info_flow.Encoder.decay: only an EMA model takes decay",
        *(text for _, text in BAD_TEACHERS.values()),
    ]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert len(lines) == len(expected), lines


def test_buffers_are_averaged_and_counters_copied() -> None:
    import copy

    from dlscaffold.parts.ema import Average, _tensors

    source = torch.nn.BatchNorm1d(3)
    average = copy.deepcopy(source)
    source(torch.randn(8, 3) * 5 + 2)  # train mode: running statistics and num_batches_tracked change
    before = average.running_mean.clone()
    floats, others = _tensors(average, source)
    Average("Teacher", "Student", 0.75, 1, 0.0, False, floats, others).update(1, 10)
    assert torch.allclose(average.running_mean, 0.75 * before + 0.25 * source.running_mean)
    assert average.num_batches_tracked.item() == source.num_batches_tracked.item() == 1
    ramped = Average("Teacher", "Student", 0.9, 1, 2.0, False, floats, others)
    assert ramped.decay_at(5, 10) == pytest.approx(0.9 * 0.25) and ramped.decay_at(10, 10) == pytest.approx(0.9)
