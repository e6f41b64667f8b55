import os
import pytest

# Quick mode for anything that reads it (notebooks run in subprocesses get it explicitly too).
os.environ.setdefault('MINIAI_QUICK', '1')
# Plots must never try to open a window.
os.environ.setdefault('MPLBACKEND', 'Agg')


# ---- fixtures of the learner/checkpoint/memory/host-sync tests (one block; more fixtures go at the end) ----
@pytest.fixture(scope='session')
def fashion_subset():
    "A factory of real Fashion-MNIST DataLoaders on the first `n_train`/`n_valid` images: `fashion_subset(bs=64, ...)`."
    from miniai.datasets import fashion_dls
    def make(bs=64, n_train=640, n_valid=256): return fashion_dls(bs=bs, n_train=n_train, n_valid=n_valid)
    return make


@pytest.fixture(scope='session')
def tiny_cnn():
    "A factory of the lessons' simple CNN with BatchNorm, seeded first: `tiny_cnn(seed=0, nfs=(8, 16, 32, 64))`."
    from miniai.conv import simple_cnn
    from miniai.datasets import set_seed
    def make(seed=0, nfs=(8, 16, 32, 64)):
        set_seed(seed)
        return simple_cnn(nfs=nfs, norm=True)
    return make


@pytest.fixture(scope='session')
def tiny_mlp():
    "A factory of a small seeded MLP for 28x28 images: flatten, 784 -> `nh` -> 10."
    import torch
    from torch import nn
    def make(seed=0, nh=32):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, nh), nn.ReLU(), nn.Linear(nh, 10))
    return make
# ---- end of the learner/checkpoint block ----


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


# ==== the private picture cache of tests/test_images.py and tests/test_predict.py ====
@pytest.fixture(scope='module')
def image_cache(tmp_path_factory):
    "A private MINIAI_CACHE for one test module's picture conversions (subprocesses inherit it), Fashion-MNIST's cache linked in."
    from miniai.datasets import cache_dir
    old, new = os.environ.get('MINIAI_CACHE'), tmp_path_factory.mktemp('cache')
    if (cache_dir()/'fashion_mnist').is_dir(): (new/'fashion_mnist').symlink_to(cache_dir()/'fashion_mnist')
    os.environ['MINIAI_CACHE'] = str(new)
    yield new
    if old is None: os.environ.pop('MINIAI_CACHE', None)
    else: os.environ['MINIAI_CACHE'] = old
