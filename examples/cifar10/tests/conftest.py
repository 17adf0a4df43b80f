"""The project's smoke tests need the CIFAR-10 images: they are skipped until the images are unpacked
(see README.md)."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "cifar10-jpg" / "train"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not DATA.is_dir():
        skip = pytest.mark.skip(reason="unpack the CIFAR-10 images first (see README.md)")
        for item in items:
            item.add_marker(skip)
