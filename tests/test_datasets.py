"Fashion-MNIST loading: IDX parsing and validation, sources, the DatasetDict, the fast path."
import gzip, multiprocessing, struct, time

import numpy as np
import pytest
import torch

from miniai.datasets import (DataFormatError, FASHION_CLASSES, DataLoaders, fashion_dls, fashion_mnist_arrays,
                             fashion_tensors, load_fashion_mnist, read_fashion_idx, read_idx, tensor_dl, quick_mode)


def _idx_bytes(arr, code=0x08):
    return b'\0\0' + bytes([code, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes()


def test_read_idx_roundtrip_plain_and_gzip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / 'a.idx').write_bytes(_idx_bytes(arr))
    (tmp_path / 'a.idx.gz').write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / 'a.idx'), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / 'a.idx.gz'), arr)


def test_read_idx_big_endian_ints(tmp_path):
    arr = np.array([1, -2, 70000], dtype='>i4')
    (tmp_path / 'i.idx').write_bytes(_idx_bytes(arr, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / 'i.idx'), [1, -2, 70000])


@pytest.mark.parametrize('mangle, msg', [
    (lambda b: b[:-1], 'truncated or corrupt'),
    (lambda b: b + b'\0', 'truncated or corrupt'),
    (lambda b: b'\x08\x00' + b[2:], 'not an IDX file'),
    (lambda b: b[:6], 'truncated inside its header'),
])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, mangle, msg):
    fn = tmp_path / 'bad-file.idx'
    fn.write_bytes(mangle(_idx_bytes(np.zeros((2, 3), np.uint8))))
    with pytest.raises(DataFormatError, match=msg) as e:
        read_idx(fn)
    assert 'bad-file.idx' in str(e.value)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    fn = tmp_path / 'x.gz'
    fn.write_bytes(gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-20])
    with pytest.raises(DataFormatError, match='gzip stream is truncated'):
        read_idx(fn)


def test_corrupt_fashion_folder_is_reported_not_skipped(tmp_path, monkeypatch):
    "A broken explicit source must raise its own error, not fall back silently to another source."
    x = np.zeros((3, 28, 28), np.uint8)
    for stem in ('train-images-idx3-ubyte', 't10k-images-idx3-ubyte'):
        (tmp_path / (stem + '.gz')).write_bytes(gzip.compress(_idx_bytes(x)))
    for stem in ('train-labels-idx1-ubyte', 't10k-labels-idx1-ubyte'):
        (tmp_path / (stem + '.gz')).write_bytes(gzip.compress(_idx_bytes(np.array([1, 2], np.uint8))))
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(DataFormatError, match='expected 3 labels'):
        fashion_mnist_arrays(tmp_path)


def test_missing_data_lists_places_and_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist_arrays(tmp_path / 'nowhere')
    msg = str(e.value)
    assert 'nowhere' in msg and 'apt-get install dataset-fashion-mnist' in msg


def test_real_arrays(fashion_arrays):
    (xt, yt), (xv, yv) = fashion_arrays['train'], fashion_arrays['test']
    assert xt.shape == (60_000, 28, 28) and xv.shape == (10_000, 28, 28) and xt.dtype == np.uint8
    assert np.bincount(yt).tolist() == [6000]*10 and np.bincount(yv).tolist() == [1000]*10
    assert 0.28 < xt.mean()/255 < 0.29


def test_dataset_dict_matches_arrays(fashion_arrays):
    dd = load_fashion_mnist()
    assert list(dd) == ['train', 'test'] and dd['train'].num_rows == 60_000 and dd['test'].num_rows == 10_000
    assert dd['train'].features['label'].names == FASHION_CLASSES
    for split in ('train', 'test'):
        x, y = fashion_arrays[split]
        for i in (0, 1234, len(x) - 1):
            item = dd[split][i]
            assert item['image'].size == (28, 28) and item['label'] == y[i]
            np.testing.assert_array_equal(np.asarray(item['image']), x[i])


def _first_load(q):
    from miniai.datasets import load_fashion_mnist
    try: q.put(load_fashion_mnist()['test'].num_rows)
    except Exception as e: q.put(f"{type(e).__name__}: {e}")


def test_two_processes_filling_an_empty_cache_at_once(tmp_path, monkeypatch, fashion_arrays):
    "Two training runs started together on a new machine both convert the data; neither may trip over the other's files."
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path / 'cache'))   # inherited by the spawned processes
    ctx = multiprocessing.get_context('spawn')
    q = ctx.Queue()
    procs = [ctx.Process(target=_first_load, args=(q,)) for _ in range(2)]
    for p in procs: p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs: p.join(timeout=60)
    assert results == [10_000, 10_000], results
    leftovers = [p.name for p in (tmp_path / 'cache').rglob('*.tmp')]
    assert leftovers == [], leftovers


def test_second_load_is_fast():
    load_fashion_mnist()
    t = time.perf_counter(); load_fashion_mnist(); dt = time.perf_counter() - t
    assert dt < 2.0, f"a cached load took {dt:.2f}s"


def test_fast_path_normalised_and_labelled():
    x, y = fashion_tensors('train')
    assert x.shape == (60_000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    with pytest.raises(ValueError, match='split must be one of'):
        fashion_tensors('valid')


def test_tensor_dl_covers_every_item_once_with_exact_last_batch():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    batches = list(tensor_dl(x, y, bs=4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match='equal length'):
        tensor_dl(x, y[:5])


def test_dataloaders_api():
    dls = fashion_dls(bs=100, n_train=1000, n_valid=500)
    assert len(dls.train) == 10 and len(dls.valid) == 3
    xb, yb = next(iter(dls.train))
    assert xb.shape == (100, 1, 28, 28) and yb.shape == (100,)
    with pytest.raises(ValueError, match='needs a training and a validation'):
        DataLoaders(dls.train)


def test_quick_mode_env(monkeypatch):
    monkeypatch.delenv('MINIAI_QUICK', raising=False); monkeypatch.delenv('IN_TEST', raising=False)
    assert not quick_mode()
    monkeypatch.setenv('IN_TEST', '1'); assert quick_mode()
    monkeypatch.setenv('MINIAI_QUICK', '0'); assert not quick_mode()
    monkeypatch.setenv('MINIAI_QUICK', '1'); assert quick_mode()
