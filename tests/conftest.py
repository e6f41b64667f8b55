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


# ==== shared fixtures of tests/test_accel.py and tests/test_averaging.py (owner: "gpu"; keep this block last) ====
def _linear_batches(n=8, bs=32, n_in=20, n_out=4, seed=0):
    "`n` batches `(x, y)` of a toy problem a linear model can learn: x ~ N(0, 1) of `n_in` features, y = argmax(x @ w)."
    import torch
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_in, n_out, generator=g)
    xs = [torch.randn(bs, n_in, generator=g) for _ in range(n)]
    return [(x, (x @ w).argmax(1)) for x in xs]

@pytest.fixture
def linear_batches():
    "A factory of small synthetic batches for unit tests of training mechanics (never for accuracy claims)."
    return _linear_batches
