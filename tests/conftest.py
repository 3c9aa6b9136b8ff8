import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests that need MNIST read it from $EDREPRO_DATA/mnist; CI sets EDREPRO_DATA to ../shared/data.
# A developer checkout with ../shared beside it gets the same default.
if "EDREPRO_DATA" not in os.environ and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
    os.environ["EDREPRO_DATA"] = str(ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    # The unit tests use tiny tensors: a second intra-op thread only adds synchronisation,
    # which is very slow when other processes keep both cores busy. Library code never sets this.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
