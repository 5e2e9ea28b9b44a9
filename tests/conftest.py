from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # Two torch threads beside OpenCV's and MediaPipe's pools on two cores were up to 200x slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
