"Fashion-MNIST loading: IDX parsing and validation, sources, the DatasetDict, the fast path."
import gzip, logging, multiprocessing, os, shutil, struct, subprocess, sys

import numpy as np
import pytest
import torch

import miniai.datasets as mds
from miniai.datasets import (DataFormatError, FASHION_CLASSES, DataLoaders, fashion_dls, fashion_mnist_arrays,
                             fashion_tensors, get_grid, load_fashion_mnist, read_fashion_idx, read_idx, show_images,
                             subplots, tensor_dl, quick_mode)


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


def test_second_load_reads_the_cache_not_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path / 'cache'))
    first = fashion_mnist_arrays()
    monkeypatch.setattr(mds, 'read_fashion_idx', lambda folder: pytest.fail('the cached arrays were not used'))
    second = fashion_mnist_arrays()
    for s in ('train', 'test'):
        for a, b in zip(first[s], second[s]): np.testing.assert_array_equal(a, b)


def _rebuild_warnings(caplog):
    return [r for r in caplog.records if r.name == 'miniai.datasets' and r.levelno == logging.WARNING]


def _assert_same_arrays(got, want):
    for s in ('train', 'test'):
        for a, b in zip(got[s], want[s]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def filled_cache(tmp_path_factory):
    "A data cache holding the arrays and the DatasetDict, built once; tests damage copies of it."
    folder = tmp_path_factory.mktemp('filled') / 'cache'
    mp = pytest.MonkeyPatch()
    mp.setenv('MINIAI_CACHE', str(folder))
    try: load_fashion_mnist()
    finally: mp.undo()
    return folder


def _use_copy_of(filled_cache, tmp_path, monkeypatch):
    shutil.copytree(filled_cache, tmp_path / 'cache')
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path / 'cache'))


@pytest.mark.parametrize('damage', ['truncate', 'flip_a_byte', 'empty'])
def test_damaged_array_cache_is_rebuilt_with_one_warning(tmp_path, monkeypatch, caplog, fashion_arrays, filled_cache, damage):
    "A cut-short `arrays.npz` (a full disk), a flipped byte or an empty file: the next load warns once and rebuilds."
    _use_copy_of(filled_cache, tmp_path, monkeypatch)
    [npz] = (tmp_path / 'cache').rglob('arrays.npz')
    raw = bytearray(npz.read_bytes())
    if damage == 'truncate': raw = raw[:len(raw) // 2]
    elif damage == 'flip_a_byte': raw[len(raw) // 3] ^= 0xFF
    else: raw = b''
    npz.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger='miniai.datasets'):
        _assert_same_arrays(fashion_mnist_arrays(), fashion_arrays)
        [w] = _rebuild_warnings(caplog)
        assert 'damaged data cache' in w.getMessage() and str(npz) in w.getMessage() and '\n' not in w.getMessage()
        caplog.clear()
        _assert_same_arrays(fashion_mnist_arrays(), fashion_arrays)   # rebuilt: no second warning
        assert _rebuild_warnings(caplog) == []


def test_damaged_cache_message_is_one_line_on_stderr(tmp_path, fashion_arrays, filled_cache):
    "As a user sees it, with no logging set up: one line on stderr, no traceback, the data still returned."
    shutil.copytree(filled_cache, tmp_path / 'cache')
    env = {**os.environ, 'MINIAI_CACHE': str(tmp_path / 'cache')}
    code = "from miniai.datasets import fashion_mnist_arrays as f; print(f()['test'][1].sum())"
    [npz] = (tmp_path / 'cache').rglob('arrays.npz')
    npz.write_bytes(npz.read_bytes()[:1000])
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == str(fashion_arrays['test'][1].sum())
    assert len(r.stderr.strip().splitlines()) == 1 and 'damaged data cache' in r.stderr, r.stderr


@pytest.mark.parametrize('damage', ['truncate_arrow', 'garble_json', 'no_checksum_file'])
def test_damaged_dataset_dict_cache_is_rebuilt_with_one_warning(tmp_path, monkeypatch, caplog, fashion_arrays,
                                                               filled_cache, damage):
    _use_copy_of(filled_cache, tmp_path, monkeypatch)
    [folder] = (tmp_path / 'cache' / 'fashion_mnist').glob('hf-*')
    arrow = next((folder / 'train').glob('*.arrow'))
    if damage == 'truncate_arrow': arrow.write_bytes(arrow.read_bytes()[:len(arrow.read_bytes()) // 2])
    elif damage == 'no_checksum_file': (folder / 'miniai-sha1.json').unlink()   # a folder from an older miniai
    else: (folder / 'dataset_dict.json').write_text('{"splits": [')
    with caplog.at_level(logging.WARNING, logger='miniai.datasets'):
        dd = load_fashion_mnist()
        [w] = _rebuild_warnings(caplog)
        assert str(folder) in w.getMessage() and '\n' not in w.getMessage()
        caplog.clear()
        dd = load_fashion_mnist()
        assert _rebuild_warnings(caplog) == []
    x, y = fashion_arrays['train']
    assert dd['train'].num_rows == 60_000 and dd['train']['label'] == y.tolist()
    for i in (0, 31_000, 59_999): np.testing.assert_array_equal(np.asarray(dd['train'][i]['image']), x[i])
    assert [p.name for p in folder.parent.iterdir() if p.name.endswith(('.tmp', '.old'))] == []


def test_show_images_returns_the_axes_it_drew_on_reusably(fashion_arrays):
    import matplotlib.pyplot as plt
    x, y = fashion_arrays['test']
    axs = show_images(x[:5], ncols=3, titles=[FASHION_CLASSES[i] for i in y[:5]])
    assert len(axs) == 5 and len(list(axs)) == 5 and len(list(axs)) == 5   # a sequence, not a one-shot iterator
    assert [ax.get_title() for ax in axs] == [FASHION_CLASSES[i] for i in y[:5]]
    assert all(len(ax.images) == 1 for ax in axs)
    np.testing.assert_array_equal(axs[2].images[0].get_array(), x[2])
    fig = axs[0].figure
    assert len(fig.axes) == 6 and not fig.axes[5].axison    # the sixth cell of the 2x3 grid is hidden
    axs[1].set_title('redrawn'); assert axs[1].get_title() == 'redrawn'
    fig2, grid = get_grid(7, ncols=4)
    assert grid.shape == (2, 4) and sum(ax.axison for ax in grid.flat) == 7
    _, one = subplots()
    assert len(one) == 1 and len(one) == 1
    plt.close('all')


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


def test_set_seed_leaves_deterministic_training_on():
    import torch
    from miniai.checkpoint import deterministic_training
    from miniai.datasets import set_seed
    with deterministic_training():
        set_seed(0)
        assert torch.are_deterministic_algorithms_enabled()        # the block is not undone
        set_seed(0, deterministic=False)                            # ...unless asked
        assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    set_seed(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    set_seed(0, deterministic=False)
