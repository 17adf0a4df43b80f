"""The console bar, the model summary and log_images: the leaves the training loop calls."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from conftest import write_config

from dlscaffold.records.images import (
    collect_images,
    image_grid,
    image_grids,
    image_problem,
    image_problems,
    parse_image_specs,
)
from dlscaffold.records.trackers import TensorBoard, Trackers
from dlscaffold.run.progress import Progress
from dlscaffold.run.summary import human_count, model_summary, summary_lines, summary_rows

MODELS = ["Encoder", "Classifier", "Decoder"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ------------------------------------------------------------------------------------ the bar


def _terminal() -> tuple[io.StringIO, object]:
    from rich.console import Console

    out = io.StringIO()
    return out, Console(file=out, force_terminal=True, width=200)


def test_the_bar_shows_epoch_batch_step_loss_and_rate_on_a_terminal() -> None:
    out, console = _terminal()
    progress = Progress(True, console=console)
    seen = []
    for i, item in enumerate(progress.track(iter(range(6)), "train", total=6, epoch=(3, 10), step=12)):
        seen.append(item)
        if i == 3:
            progress.show(step=16, loss=0.4321)
    text = ANSI.sub("", out.getvalue())
    assert seen == list(range(6))
    assert "train  epoch 3/10" in text
    assert "batch 6/6" in text and "step 18" in text  # 12 before the first batch, one per batch
    assert "loss 0.4321" in text and "steps/s" in text
    progress.show(loss=1.0)  # no bar in progress: nothing happens


def test_a_resumed_epoch_counts_on_from_the_batches_done() -> None:
    out, console = _terminal()
    progress = Progress(True, console=console)
    assert list(progress.track([7, 8], "train", total=5, epoch=(2, 4), step=40, done=3)) == [7, 8]
    text = ANSI.sub("", out.getvalue())
    assert "batch 5/5" in text and "step 42" in text


def test_validation_bars_count_batches_and_take_their_total_from_len() -> None:
    out, console = _terminal()
    assert list(Progress(True, console=console).track([1, 2, 3], "val")) == [1, 2, 3]
    text = ANSI.sub("", out.getvalue())
    assert "batch 3/3" in text and "batches/s" in text and "step" not in text and "loss" not in text


def test_without_a_terminal_the_bar_is_a_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(False)
    assert list(progress.track(iter([1, 2]), "train", total=2, epoch=(1, 2), step=0)) == [1, 2]
    progress.show(step=2, loss=0.5)
    assert capsys.readouterr() == ("", "")


def test_leaving_the_loop_early_closes_the_bar() -> None:
    out, console = _terminal()
    progress = Progress(True, console=console)
    for item in progress.track(range(10), "train", step=0):
        if item == 2:
            break
    assert progress._bar is None
    assert list(progress.track([1], "val")) == [1]  # a new bar can start


# -------------------------------------------------------------------------------- the summary


@pytest.fixture
def toy_flow(toy: Path, tmp_path: Path):
    import torch

    from dlscaffold.parts.flow import build_flow
    from dlscaffold.prepare import prepare

    config = write_config(toy, "frozen.yml", info_flow__Decoder__train=0)
    prepared = prepare(config)
    flow = build_flow(prepared.config, prepared.project, prepared.losses, prepared.evals, torch.device("cpu"))
    return flow, prepared.config


def test_human_counts() -> None:
    assert [human_count(n) for n in (0, 950, 1000, 12_345, 1_234_567, 123_456_789, 3_400_000_000)] == [
        "0",
        "950",
        "1.0K",
        "12.3K",
        "1.2M",
        "123M",
        "3.4B",
    ]


def test_the_summary_of_the_toy_project(toy_flow) -> None:
    flow, config = toy_flow
    rows = summary_rows(flow, config)
    # Encoder: 8*32+32 + 32*4+4 = 420; Classifier: 4*3+3 = 15; Decoder: 4*8+8 = 40
    assert rows == [
        ("Encoder", "Encoder", "420", "trained", "initialised"),
        ("Classifier", "Classifier", "15", "trained", "initialised"),
        ("Decoder", "Decoder", "40", "frozen", "initialised"),
        ("total", "", "475", "435 trained", ""),
    ]
    lines = summary_lines(flow, config)
    assert lines[0].split() == ["model", "class", "parameters", "training", "weights"]
    assert lines[3].split() == ["Decoder", "Decoder", "40", "frozen", "initialised"]
    assert len({line.index("parameters") if i == 0 else None for i, line in enumerate(lines)} - {None}) == 1


def test_the_summary_says_where_weights_came_from(toy_flow) -> None:
    flow, config = toy_flow
    config.info_flow["Encoder"].model_dir, config.info_flow["Encoder"].epoch = Path("/runs/20240101_1"), 7
    weights = [row[4] for row in summary_rows(flow, config)]
    assert weights == ["/runs/20240101_1 epoch 7", "initialised", "initialised", ""]
    weights = [row[4] for row in summary_rows(flow, config, resumed_epoch=3)]
    assert weights == ["resumed from epoch 3"] * 3 + [""]
    weights = [row[4] for row in summary_rows(flow, config, {"Classifier": "from elsewhere"})]
    assert weights[1] == "from elsewhere"


def test_the_summary_table_renders(toy_flow) -> None:
    from rich.table import Table

    flow, config = toy_flow
    table = model_summary(flow, config, resumed_epoch=2)
    assert isinstance(table, Table) and table.row_count == 4
    out, console = _terminal()
    console.print(table)
    text = ANSI.sub("", out.getvalue())
    assert "Classifier" in text and "frozen" in text and "resumed from epoch 2" in text and "475" in text


# ---------------------------------------------------------------------------------- log_images


def test_image_specs_are_checked_before_anything_is_built() -> None:
    assert parse_image_specs(["Decoder.reconstruction", "dataset.features"], MODELS) == []
    problems = parse_image_specs(["Decodr.reconstruction", "features", "Decoder.", "trainer.step"], MODELS)
    assert problems == [
        "logging_params.log_images: 'Decodr.reconstruction' names unknown source 'Decodr'; did you mean 'Decoder'? "
        "expected 'dataset' or a model in info_flow: dataset, Encoder, Classifier, Decoder",
        "logging_params.log_images: found 'features'; expected '<Model>.<output>' or 'dataset.<key>'",
        "logging_params.log_images: found 'Decoder.'; expected '<Model>.<output>' or 'dataset.<key>'",
        "logging_params.log_images: 'trainer.step' names unknown source 'trainer'; "
        "expected 'dataset' or a model in info_flow: dataset, Encoder, Classifier, Decoder",
    ]


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 1, 28, 28), (2, 3, 32, 16), (1, 5, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.int64])
def test_images_accepted(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    assert image_problem("Decoder.image", torch.zeros(shape, dtype=dtype)) is None


@pytest.mark.parametrize("shape", [(2, 10), (2,), (2, 28, 28, 3), (2, 2, 8, 8), (2, 3, 4, 4, 4), (0, 8, 8), ()])
def test_tensors_that_are_not_images_are_refused_in_one_line(shape: tuple[int, ...]) -> None:
    problem = image_problem("Classifier.class_logits", torch.zeros(shape))
    assert problem == (
        f"logging_params.log_images: 'Classifier.class_logits' has shape {shape}; "
        "expected images (B, H, W) or (B, C, H, W) with C 1 or 3"
    )


def test_the_exact_message_for_logits() -> None:
    assert image_problem("Classifier.class_logits", torch.randn(2, 10)) == (
        "logging_params.log_images: 'Classifier.class_logits' has shape (2, 10); "
        "expected images (B, H, W) or (B, C, H, W) with C 1 or 3"
    )


def test_other_values_are_refused() -> None:
    assert image_problem("dataset.mask", torch.zeros(2, 8, 8, dtype=torch.bool)) == (
        "logging_params.log_images: 'dataset.mask' has dtype torch.bool; expected a float or integer tensor of images"
    )
    assert image_problem("dataset.names", ["a", "b"]) == (
        "logging_params.log_images: 'dataset.names' is a list, not a tensor; "
        "expected images (B, H, W) or (B, C, H, W) with C 1 or 3"
    )


def test_the_batch_check_names_missing_tensors() -> None:
    batch = {"features": torch.zeros(2, 8), "image": torch.zeros(2, 8, 8)}
    outputs = {
        "Decoder": {"reconstruction": torch.zeros(2, 1, 4, 4)},
        "Classifier": {"class_logits": torch.zeros(2, 3)},
    }
    specs = [
        "dataset.image",
        "Decoder.reconstruction",
        "Decoder.reconstuction",
        "dataset.img",
        "Classifier.class_logits",
    ]
    assert image_problems(specs, batch, outputs) == [
        "logging_params.log_images: 'Decoder.reconstuction': model 'Decoder' returns no 'reconstuction'; "
        "did you mean 'reconstruction'? expected one of: reconstruction",
        "logging_params.log_images: 'dataset.img': the dataset's items hold no 'img'; did you mean 'image'? "
        "expected one of: features, image",
        "logging_params.log_images: 'Classifier.class_logits' has shape (2, 3); "
        "expected images (B, H, W) or (B, C, H, W) with C 1 or 3",
    ]


def test_collect_takes_the_first_eight_samples_on_the_cpu() -> None:
    batch = {"image": torch.rand(20, 3, 6, 5)}
    outputs = {"Decoder": {"reconstruction": torch.rand(20, 6, 5, requires_grad=True) * 2}}
    images = collect_images(["dataset.image", "Decoder.reconstruction", "Decoder.reconstruction"], batch, outputs)
    assert list(images) == ["dataset.image", "Decoder.reconstruction"]
    assert torch.equal(images["dataset.image"], batch["image"][:8])
    assert images["Decoder.reconstruction"].shape == (8, 6, 5) and not images["Decoder.reconstruction"].requires_grad
    small = collect_images(["dataset.image"], {"image": torch.rand(3, 1, 4, 4)}, {})
    assert small["dataset.image"].shape == (3, 1, 4, 4)


@pytest.mark.parametrize(
    ("shape", "grid"), [((8, 3, 10, 6), (3, 14, 66)), ((20, 10, 6), (1, 14, 66)), ((3, 1, 4, 5), (1, 8, 23))]
)
def test_a_grid_is_one_row_of_samples_scaled_to_0_1(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    tensor = torch.randn(shape) * 50 + 7
    result = image_grid(tensor)
    assert tuple(result.shape) == grid and result.dtype == torch.float32
    assert result.min() >= 0 and result.max() <= 1
    first = result[:, 2 : 2 + shape[-2], 2 : 2 + shape[-1]]
    assert first.min() == 0 and first.max() == 1  # each image spans [0, 1] on its own


def test_a_grid_of_integers_constants_and_non_finite_values() -> None:
    images = torch.zeros(2, 1, 3, 3)
    images[1, 0, 0, 0], images[1, 0, 1, 1] = float("nan"), float("inf")
    images[1, 0, 2, 2] = 5.0
    grid = image_grid(images)
    assert torch.isfinite(grid).all() and grid.max() == 1 and grid[:, 2:5, 2:5].max() == 0  # constant: black
    grid = image_grid(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8))
    assert grid.shape == (3, 12, 42) and 0 <= grid.min() and grid.max() <= 1


def test_run_log_images_reach_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    collected = collect_images(
        ["dataset.image", "Decoder.reconstruction"],
        {"image": torch.rand(8, 3, 6, 6)},
        {"Decoder": {"reconstruction": torch.rand(8, 6, 6)}},
    )
    log = TensorBoard(tmp_path)
    log.images(5, image_grids(collected))
    log.images(10, image_grids(collected))
    log.close("completed")
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["images/Decoder.reconstruction", "images/dataset.image"]
    shown = events.Images("images/dataset.image")
    assert [e.step for e in shown] == [5, 10] and (shown[0].height, shown[0].width) == (10, 66)
    Trackers().images(5, image_grids(collected))  # a --debug run's trackers: none, nothing written
