"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a shared, loaded CPU, OpenMP barriers make many tiny convs with two threads several times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# search.py run as a subprocess by a test draws its figures in this process's place (no detached
# finishing worker outliving the test); tests of the background worker remove the variable.
import os as _os

_os.environ.setdefault("CIMNAS_SEARCH_FINISH", "inline")
