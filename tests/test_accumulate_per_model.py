"""A model's own ``accumulate`` (``info_flow.<Model>.accumulate``): that model steps after its own
group of batches, from the mean gradient over their samples, while the others step every step."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import run_cli, run_dirs, write_config

FROZEN_ENCODER = {"train": 0, "init_args": {"in_dim": 8, "enc_dim": 4}, "inputs": {"features": "dataset"}}


def _run(toy: Path, name: str, batch: int, decoder: dict) -> dict[str, dict[str, torch.Tensor]]:
    config = write_config(
        toy,
        f"{name}.yml",
        dataloading_params__batch_size=batch,
        training_params__max_training_epochs=2,
        logging_params__logging_dir=name,
        info_flow__Encoder=FROZEN_ENCODER,  # frozen: Classifier and Decoder learn independently
        **{f"info_flow__Decoder__{k}": v for k, v in decoder.items()},
    )
    done = run_cli("train", str(config), cwd=toy)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = [p for p in (toy / name).iterdir() if p.is_dir()]
    return {m: torch.load(run / "checkpoints" / f"{m}_000002.pt", weights_only=True) for m in ("Classifier", "Decoder")}


def test_a_model_accumulating_2_batches_of_16_trains_like_batch_32_while_the_others_step_every_batch(
    toy: Path,
) -> None:
    mixed = _run(toy, "mixed", 16, {"accumulate": 2})
    small = _run(toy, "small", 16, {})
    large = _run(toy, "large", 32, {})
    for key, value in mixed["Decoder"].items():  # 180 points: 5 groups of 32 and a short one of 20
        assert torch.allclose(value, large["Decoder"][key], atol=1e-6), key
        assert not torch.allclose(value, small["Decoder"][key], atol=1e-4), key
    for key, value in mixed["Classifier"].items():
        assert torch.equal(value, small["Classifier"][key]), key


def test_a_models_accumulate_is_checked_with_the_other_problems(toy: Path) -> None:
    config = write_config(
        toy,
        "bad.yml",
        training_params__accumulate=2,
        info_flow__Decoder__accumulate=3,
        info_flow__Classifier__accumulate=4,
        info_flow__Classifier__update_every=2,
    )
    done = run_cli("train", str(config), cwd=toy)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert any(
        "info_flow.Decoder.accumulate: 3 is not a multiple of training_params.accumulate (2)" in e for e in errors
    )
    assert any("info_flow.Classifier.accumulate: cannot be combined with update_every" in e for e in errors)
    # the reconstruction loss reaches Encoder (2) and Decoder (3): one loss, two groups of batches
    assert any("losses.MSE: trains models that accumulate different numbers" in e for e in errors), errors
    assert not run_dirs(toy)
