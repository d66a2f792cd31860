import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """These tests use tiny models; on a shared 2-core machine extra intra-op threads only
    spin-wait (10x slower measured), so run them single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
