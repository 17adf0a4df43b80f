"""Tests of ``dlscaffold arch``: the layer-plan table, its parameter counts and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dlscaffold.cli import app as cli_app
from dlscaffold.errors import UserError
from dlscaffold.modules import CONV1DN, CONV2DN, DECONV1DN, DECONV2DN, FCN, ResNetFCN
from dlscaffold.tools.arch import plan_table


@pytest.fixture
def app():
    """The real CLI, which declares ``arch`` and calls :func:`dlscaffold.tools.arch.plan_table`."""
    return cli_app


def _rows(stdout: str) -> list[list[str]]:
    """The body rows of the rich table, as lists of stripped cell texts."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


CASES = [
    (["conv2d", "--input", "3,32,32", "--output", "64,1,1"], CONV2DN((3, 32, 32), (64, 1, 1))),
    (["deconv2d", "--input", "64,1,1", "--output", "3,32,32", "--no-batchnorm"],
     DECONV2DN((64, 1, 1), (3, 32, 32), batchnorm=False)),
    (["conv1d", "--input", "4,30", "--output", "16,1", "--nonlinear"],
     CONV1DN((4, 30), (16, 1), nonlinear=True)),
    (["deconv1d", "--input", "16,1", "--output", "4,30", "--dropout"],
     DECONV1DN((16, 1), (4, 30), dropout=True)),
    (["conv2d", "--input", "3,13,13", "--output", "8,1,1", "--adaptive-pool"],
     CONV2DN((3, 13, 13), (8, 1, 1), adaptive_pool=True)),
]  # fmt: skip


@pytest.mark.parametrize("args, module", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_conv_table_lists_the_plan_and_its_parameters(app, args, module):
    result = CliRunner().invoke(app, ["arch", *args])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    layer_rows, total_row = rows[:-1], rows[-1]
    assert len(layer_rows) == len(module.plan)
    for row, spec, block in zip(layer_rows, module.plan, module.blocks, strict=True):
        _, layers, channels, kernel, stride, padding, output, params = row
        assert layers.split("+")[0] == spec.kind
        assert channels == f"{spec.in_channels}->{spec.out_channels}"
        assert output == "x".join(map(str, spec.output_shape))
        shown_and_planned = zip((kernel, stride, padding), (spec.kernel, spec.stride, spec.padding), strict=True)
        for shown, planned in shown_and_planned:
            assert shown == ("x".join(map(str, planned)) or "-")  # "-" for a pool layer
        assert params == f"{_count(block):,}"
    assert total_row[1] == "total" and total_row[-1] == f"{_count(module):,}"


@pytest.mark.parametrize(
    "args, module",
    [
        (["fcn", "--input", "64", "--output", "10", "--num-layers", "3"], FCN(64, 10, 3)),
        (["fcn", "--input", "8", "--output", "2", "--hidden-size", "32"],
         FCN(8, 2, 2, hidden_size=32)),
        (["resnetfcn", "--input", "64", "--output", "10", "--num-layers", "3"],
         ResNetFCN(64, 10, 3)),
        (["resnetfcn", "--input", "64", "--output", "10", "--batchnorm"],
         ResNetFCN(64, 10, 2, batchnorm=True)),
    ],
)  # fmt: skip
def test_dense_table_lists_widths_and_parameters(app, args, module):
    result = CliRunner().invoke(app, ["arch", *args])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert [row[3] for row in rows[:-1]] == [f"{s.in_features}->{s.out_features}" for s in module.plan]
    assert [row[1] for row in rows[:-1]] == [s.kind for s in module.plan]
    assert rows[-1][-1] == f"{_count(module):,}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["conv2d", "--input", "3,32,32", "--output", "64,3,3"],
         "error: cannot map H 32 -> 3: 32/3 is not an integer; "
         "sizes that work: 1, 2, 4, 8, 16, 32"),
        (["deconv1d", "--input", "3,32", "--output", "3,16"], "cannot shrink"),
        (["conv2d", "--input", "3,32", "--output", "64,1,1"], "must have 3 entries (C, H, W)"),
        (["conv2d", "--input", "3,x,32", "--output", "64,1,1"], "--input '3,x,32' is not"),
        (["fcn", "--input", "3,32", "--output", "10"], "fcn sizes are feature counts"),
        (["conv2d", "--input", "3,32,32", "--output", "8,1,1", "--num-layers", "3"],
         "--num-layers applies to fcn, resnetfcn only"),
        (["resnetfcn", "--input", "64", "--output", "10", "--hidden-size", "8"],
         "--hidden-size applies to fcn only"),
    ],
)  # fmt: skip
def test_bad_sizes_print_one_line_and_exit_2(app, args, message):
    result = CliRunner().invoke(app, ["arch", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.output


def test_importing_the_command_does_not_import_torch():
    code = "import sys, dlscaffold.tools.arch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_table_is_a_plain_function():
    table = plan_table("fcn", "64", "10", num_layers=3)
    assert table.title == "FCN 64 -> 10" and table.row_count == 4  # three layers and the total
    with pytest.raises(UserError, match="did you mean 'conv2d'"):
        plan_table("conv2", "3,32,32", "64,1,1")
    with pytest.raises(UserError, match="--hidden-size applies to fcn only"):
        plan_table("resnetfcn", "64", "10", hidden_size=8)
