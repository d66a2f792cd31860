import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The analytic models are tiny; on a shared 2-core machine one thread is ~30x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
