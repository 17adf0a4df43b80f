"""Settings of this project's tests: ``pytest --regen-determinism`` accepts a deliberate change to
what training computes (it rewrites tests/determinism.json); the CPU's vector instructions are
fixed for the whole test session."""

import os
import platform

# The determinism test hashes exact bytes, and torch's CPU kernels (its own, MKL's, oneDNN's) choose
# their vector instructions by the machine: AVX-512 and AVX2 code round differently. Every x86-64 CPU
# of the last decade has AVX2, so the tests use it everywhere and pins written on one machine hold on
# another (CI's included). Set here, before torch is imported: the libraries read these once.
if platform.machine().lower() in ("x86_64", "amd64"):
    for name, value in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        os.environ.setdefault(name, value)


def pytest_addoption(parser):
    parser.addoption(
        "--regen-determinism",
        action="store_true",
        help="accept what training computes now: rewrite tests/determinism.json (then commit it)",
    )
