"""The project's tests need the CIFAR-10 images: they are skipped until the images are unpacked
(see README.md). ``pytest --regen-determinism`` accepts a deliberate change to what training
computes (it rewrites tests/determinism.json)."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "cifar10-jpg" / "train"


def pytest_addoption(parser):
    parser.addoption(
        "--regen-determinism",
        action="store_true",
        help="accept what training computes now: rewrite tests/determinism.json (then commit it)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not DATA.is_dir():
        skip = pytest.mark.skip(reason="unpack the CIFAR-10 images first (see README.md)")
        for item in items:
            item.add_marker(skip)
