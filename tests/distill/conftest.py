import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """The test machine is shared; intra-op threads only add contention for these small tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
