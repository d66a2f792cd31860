import pytest
import torch

# The test problems are tiny; on small shared machines extra intra-op threads only add contention.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """Benchmarks write their result files into ``tmp_path`` instead of benchmarks/results/."""
    from benchmarks import _common
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    return tmp_path
