"""Settings of this project's tests: ``pytest --regen-determinism`` accepts a deliberate change to
what training computes (it rewrites tests/determinism.json)."""


def pytest_addoption(parser):
    parser.addoption(
        "--regen-determinism",
        action="store_true",
        help="accept what training computes now: rewrite tests/determinism.json (then commit it)",
    )
