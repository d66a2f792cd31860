import pytest
import torch

# The test problems are tiny; on small shared machines extra intra-op threads only add contention.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
