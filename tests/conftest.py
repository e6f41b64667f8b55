import os
import pytest

# Quick mode for anything that reads it (notebooks run in subprocesses get it explicitly too).
os.environ.setdefault('MINIAI_QUICK', '1')
# Plots must never try to open a window.
os.environ.setdefault('MPLBACKEND', 'Agg')


@pytest.fixture(scope='session')
def fashion_arrays():
    "The real Fashion-MNIST arrays (skips nothing: a missing data set is a test failure with the install hint)."
    from miniai.datasets import fashion_mnist_arrays
    return fashion_mnist_arrays()
