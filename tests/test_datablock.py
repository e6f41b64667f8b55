"""The data block API (miniai.datablock, miniai.imagefolders) on real Fashion-MNIST images written as PNG files."""
import os, random, warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from PIL import Image
import torchvision.transforms.functional as TF
from torchvision.transforms import Resize

from miniai.datablock import (CategoryProcessor, ImageList, ImageReadError, ItemList, LabeledData, ListContainer,
                              Normalize, ResizeFixed, SplitData, compose, get_files, grandparent_splitter,
                              image_extensions, make_gray, make_rgb, parent_labeler, random_splitter, regex_labeler,
                              split_by_func, to_byte_tensor, to_float_tensor)
from miniai.imagefolders import (FASHION_FOLDERS, check_class_folders, image_folder_dls, write_fashion_pngs,
                                 write_tinted_pngs)
from miniai.datasets import DataLoaders, FASHION_MEAN, FASHION_STD, fashion_mnist_arrays, fashion_tensors, set_seed
from miniai.conv import simple_cnn
from miniai.learner import Learner, TrainCB, MetricsCB
from miniai.metrics import Accuracy

N = 30  # images per class and split: 300 train, 300 valid


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return write_fashion_pngs(tmp_path_factory.mktemp('png')/'fashion', n_per_class=N)


@pytest.fixture
def toy(tmp_path):
    "Empty files in a small tree: for the file-discovery mechanics only."
    for f in ['a.png', 'b.JPG', 'notes.txt', '.hidden.png', 'sub/c.png', 'sub/deeper/d.jpeg', '.cache/e.png',
              'other/f.png', 'sub/.ipynb_checkpoints/g.png']:
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path/f).touch()
    return tmp_path


# --- discovery -----------------------------------------------------------------------------------------------------

def test_get_files_extensions(toy):
    assert [p.name for p in get_files(toy, image_extensions)] == ['a.png', 'b.JPG']
    assert [p.name for p in get_files(toy, 'png')] == ['a.png']
    assert [p.name for p in get_files(toy, ['.JPG'])] == ['b.JPG']
    assert [p.name for p in get_files(toy)] == ['a.png', 'b.JPG', 'notes.txt']

def test_get_files_recursion_hidden_include(toy):
    rel = lambda ps: [p.relative_to(toy).as_posix() for p in ps]
    assert rel(get_files(toy, image_extensions, recurse=True)) == \
        ['a.png', 'b.JPG', 'other/f.png', 'sub/c.png', 'sub/deeper/d.jpeg']
    assert rel(get_files(toy, '.png', recurse=True, include=['sub'])) == ['a.png', 'sub/c.png']
    assert rel(get_files(toy, image_extensions, recurse=False, include=['sub'])) == ['a.png', 'b.JPG']

def test_get_files_matches_rglob(tree):
    files = get_files(tree, image_extensions, recurse=True)
    assert len(files) == 2*10*N
    assert files == sorted(files, key=lambda p: p.relative_to(tree).parts)  # deterministic order
    assert sorted(files) == sorted(p for p in tree.rglob('*.png'))

def test_get_files_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'): get_files(tmp_path/'nope')


# --- containers ----------------------------------------------------------------------------------------------------

def test_list_container_indexing_and_repr(tree):
    lc = ListContainer(range(10))
    assert lc[3] == 3 and lc[2:4] == [2, 3] and lc[[1, 5]] == [1, 5]
    assert lc[[i % 2 == 0 for i in range(10)]] == [0, 2, 4, 6, 8]
    assert lc[torch.tensor([1, 2])] == [1, 2]
    with pytest.raises(IndexError, match='mask of length 3'): lc[[True, False, True]]
    il = ImageList.from_files(tree, tfms=[to_byte_tensor])
    r = repr(il)
    assert r.startswith(f'ImageList ({2*10*N} items)') and 'train/ankle_boot/' in r and str(tree) in r
    assert type(il.new(il.items[:3])) is ImageList and il.new([]).tfms is il.tfms


# --- transforms ----------------------------------------------------------------------------------------------------

def test_transform_order():
    calls = []
    def a(x): calls.append('a'); return x + 1
    def b(x): calls.append('b'); return x*10
    def c(x): calls.append('c'); return x - 3
    a._order, b._order = 5, -1   # c has no _order: 0
    assert compose(2, [a, b, c]) == 18 and calls == ['b', 'c', 'a']
    assert compose(2, [c, a, b]) == 18
    tfms = [to_float_tensor, to_byte_tensor, ResizeFixed(16), make_rgb]
    assert sorted(tfms, key=lambda f: f._order) == [make_rgb, tfms[2], to_byte_tensor, to_float_tensor]

def test_transforms_vs_torchvision(tree):
    im = Image.open(get_files(tree/'val'/'coat', '.png')[0])
    assert torch.equal(to_byte_tensor(im), TF.pil_to_tensor(im))
    assert torch.equal(to_byte_tensor(make_rgb(im)), TF.pil_to_tensor(make_rgb(im)))
    assert torch.equal(TF.pil_to_tensor(ResizeFixed((40, 50))(im)), TF.pil_to_tensor(Resize((40, 50))(im)))
    assert torch.allclose(to_float_tensor(to_byte_tensor(im)), TF.to_tensor(im))
    x = torch.rand(3, 8, 8)
    assert torch.allclose(Normalize([.1, .2, .3], [.5, .6, .7])(x), TF.normalize(x, [.1, .2, .3], [.5, .6, .7]))
    with pytest.raises(ValueError, match='make_rgb'): to_byte_tensor(im.convert('F'))

def test_png_round_trip_exact(tree):
    "Every PNG comes back as exactly the source pixels, with the source label."
    arrays = fashion_mnist_arrays()
    for split, src in (('train', 'train'), ('val', 'test')):
        il = ImageList.from_files(tree/split, tfms=[to_byte_tensor])
        xs = torch.stack(il[:])                                       # (n, 1, 28, 28) uint8
        idx = [int(f.stem) for f in il.items]
        assert xs.dtype == torch.uint8 and torch.equal(xs[:, 0], torch.from_numpy(arrays[src][0][idx]))
        assert [FASHION_FOLDERS[c] for c in arrays[src][1][idx]] == [f.parent.name for f in il.items]
    il.tfms = [to_byte_tensor, to_float_tensor]
    assert torch.equal(il[0], torch.from_numpy(arrays['test'][0][idx[0]])[None].float()/255)


# --- splitting and labelling ---------------------------------------------------------------------------------------

def test_grandparent_and_func_splitters(tree):
    il = ImageList.from_files(tree)
    sd = SplitData.split_by_func(il, partial(grandparent_splitter, valid_name='val'))
    assert (len(sd.train), len(sd.valid)) == (10*N, 10*N)
    assert all(f.parent.parent.name == 'val' for f in sd.valid.items)
    assert type(sd.valid) is ImageList and sd.path == tree
    assert split_by_func(range(6), lambda o: None if o == 0 else o > 3) == ([1, 2, 3], [4, 5])

def test_random_splitter_seeded():
    state = torch.get_rng_state()
    m = random_splitter(1001, 0.2, seed=3)
    assert torch.equal(state, torch.get_rng_state())    # the global generator is untouched
    assert sum(m) == 200 and m == random_splitter(1001, 0.2, seed=3) and m != random_splitter(1001, 0.2, seed=4)
    sd = SplitData.split_random(ItemList(range(100)), 0.3, seed=0)
    assert (len(sd.train), len(sd.valid)) == (70, 30) and sorted(sd.train.items + sd.valid.items) == list(range(100))
    with pytest.raises(ValueError, match='p_valid'): random_splitter(10, -0.1)

def test_split_empty_side_names_path(tree):
    il = ImageList.from_files(tree)
    with pytest.raises(ValueError, match='validation set empty') as e:
        SplitData.split_by_func(il, grandparent_splitter)           # default valid_name='valid'; this tree has 'val'
    assert str(tree) in str(e.value) and "'val'" in str(e.value)
    with pytest.raises(ValueError, match='training set empty'):
        SplitData.split_by_func(il, lambda f: True)
    with pytest.raises(ValueError, match='validation set empty'): SplitData.split_random(il, 0.0)

def test_labellers(tree):
    f = get_files(tree/'train'/'bag', '.png')[0]
    assert parent_labeler(f) == 'bag'
    assert regex_labeler(r'/([a-z_]+)/\d+\.png$')(f) == 'bag'
    assert regex_labeler(r'\d{5}')(f) == f.stem
    with pytest.raises(ValueError, match=f.name): regex_labeler(r'\.jpg$')(f)
    sd = SplitData.split_by_func(ImageList.from_files(tree), partial(grandparent_splitter, valid_name='val'))
    ll = sd.label_by_func(parent_labeler)
    assert ll.train.proc_y is ll.valid.proc_y and ll.train.proc_y.vocab == sorted(FASHION_FOLDERS)
    assert ll.valid.obj([0, 1]) == [ll.valid.x.items[0].parent.name, ll.valid.x.items[1].parent.name]
    by_func = sd.label_by_func(lambda f: int(f.stem) % 2 == 0)   # any function: here even/odd index
    assert by_func.train.proc_y.vocab == [False, True]
    assert 'LabeledData' in repr(ll.train) and 'ankle_boot' in repr(ll.train)

def test_vocab_from_training_set_only():
    proc = CategoryProcessor()
    assert proc(['dog', 'cat', 'dog']) == [1, 0, 1]
    assert proc(['cat']) == [0] and proc.vocab == ['cat', 'dog']
    with pytest.raises(ValueError, match='zebra'): proc(['zebra'])
    train, valid = ItemList(['a/x/1', 'a/y/2']), ItemList(['b/x/3', 'b/z/4'], path='/data/valid')
    with pytest.raises(ValueError, match=r"/data/valid.*'z'"):
        SplitData(train, valid).label_by_func(lambda s: s.split('/')[1])


# --- batches, workers, training ------------------------------------------------------------------------------------

def test_dls_train_equal_to_in_memory(tree):
    "Same images, same order, same seed: training from the PNGs (decoded by a worker) equals training from tensors."
    dls = image_folder_dls(tree, mode='L', bs=32, stats=([FASHION_MEAN], [FASHION_STD]), vocab=FASHION_FOLDERS,
                           num_workers=1)
    assert (dls.c_in, dls.c_out, dls.train.num_workers) == (1, 10, 1)
    xb, yb = next(iter(dls.valid))
    assert xb.shape == (64, 1, 28, 28) and yb.dtype == torch.int64
    def mem(ds):
        x, y = fashion_tensors('train' if ds.x.items[0].parent.parent.name == 'train' else 'test')
        idx = torch.tensor([int(f.stem) for f in ds.x.items])
        return x[idx], y[idx]
    (xt, yt), (xv, yv) = mem(dls.train.dataset), mem(dls.valid.dataset)
    assert torch.allclose(xb, xv[:64], atol=1e-6) and torch.equal(yb, yv[:64])
    accs = []
    same = DataLoaders(DataLoader(TensorDataset(xt, yt), batch_size=32, shuffle=True),
                       DataLoader(TensorDataset(xv, yv), batch_size=64))
    for d in (dls, same):
        set_seed(0)
        m = MetricsCB(accuracy=Accuracy())
        Learner(simple_cnn(norm=True), d, F.cross_entropy, lr=0.4, cbs=[TrainCB(), m]).fit(1)
        accs.append((m.last('train')['loss'], m.last()['accuracy']))
    assert accs[0][1] > 0.3                                          # it learns (10 classes: chance is 0.1)
    assert abs(accs[0][0] - accs[1][0]) < 1e-4 and abs(accs[0][1] - accs[1][1]) < 0.005

def test_variable_size_rgb_path(tmp_path):
    "Colour-tinted, upscaled crops of real images, in PNG/JPEG and several modes, come out as one RGB batch."
    t = write_tinted_pngs(tmp_path/'tinted', n_per_class=4)
    ims = [Image.open(f) for f in get_files(t, image_extensions, recurse=True)]
    assert {im.mode for im in ims} == {'RGB', 'L', 'RGBA'} and {im.format for im in ims} == {'PNG', 'JPEG'}
    assert len({im.size for im in ims}) > 10
    dls = image_folder_dls(t, size=(32, 24), bs=8, num_workers=0)
    xb, yb = next(iter(dls.train))
    assert xb.shape == (8, 3, 32, 24) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    assert dls.c_in == 3 and dls.vocab == sorted(FASHION_FOLDERS)
    grey = next(f for f, im in zip(get_files(t, image_extensions, recurse=True), ims) if im.mode == 'L')
    x = compose(ImageList([grey]).get(grey), [make_rgb, to_byte_tensor])
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])   # greyscale → RGB copies the channel


# --- bad input -----------------------------------------------------------------------------------------------------

def test_empty_folder_and_no_images(tmp_path):
    with pytest.raises(ValueError, match=f'No image files found in {tmp_path}.*empty'): ImageList.from_files(tmp_path)
    (tmp_path/'a.txt').write_text('x'); (tmp_path/'b.csv').write_text('x')
    with pytest.raises(ValueError, match='2 other file'): ImageList.from_files(tmp_path)

def test_non_image_file_names_path(tmp_path):
    p = write_fashion_pngs(tmp_path/'t', n_per_class=1)
    fake = p/'train'/'bag'/'fake.png'
    fake.write_text('this is not a PNG')
    il = ImageList.from_files(p, tfms=[to_byte_tensor])
    with pytest.raises(ImageReadError, match='fake.png.*skip_corrupt=True'): il[il.items.index(fake)]
    dls = image_folder_dls(p, mode='L', bs=4, num_workers=1)          # the error crosses the worker boundary
    with pytest.raises(Exception, match='fake.png'): list(dls.train)

def test_class_folder_without_images(tmp_path):
    p = write_fashion_pngs(tmp_path/'t', n_per_class=1)
    check_class_folders(p)
    (p/'val'/'zebra').mkdir(); (p/'val'/'zebra'/'notes.txt').write_text('x')
    with pytest.raises(ValueError, match=f"no images: {p/'val'/'zebra'}"): image_folder_dls(p)
    with pytest.raises(ValueError, match="no valid folder.*found folders \\['train', 'val'\\]"):
        image_folder_dls(p, valid_name='valid')

def test_corrupt_images_skipped_and_counted(tmp_path):
    p = write_fashion_pngs(tmp_path/'t', n_per_class=2)
    n = len(get_files(p, '.png', recurse=True))
    (p/'train'/'bag'/'fake.png').write_text('not an image')
    trunc = get_files(p/'val'/'coat', '.png')[0]
    trunc.write_bytes(trunc.read_bytes()[:50])
    with pytest.warns(UserWarning, match=f'Skipped 2 of {n + 1} files under {p}'):
        il = ImageList.from_files(p, tfms=[to_byte_tensor], skip_corrupt=True, num_workers=1)
    assert len(il) == n - 1 and sorted(f.name for f in il.skipped) == sorted(['fake.png', trunc.name])
    assert all(x.shape == (1, 28, 28) for x in il[:])
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                 # no warning when nothing is skipped
        assert len(ImageList.from_files(p/'train'/'coat', skip_corrupt=True).skipped) == 0
    for f in get_files(p/'train'/'coat', '.png'): f.write_text('x')
    with pytest.raises(ValueError, match='None of the 2 files'): ImageList.from_files(p/'train'/'coat', skip_corrupt=True)


def test_to_dls_drop_last_drops_only_the_incomplete_training_batch(tree):
    ll = SplitData.split_by_func(ImageList.from_files(tree, tfms=[to_byte_tensor, to_float_tensor]),
                                 partial(grandparent_splitter, valid_name='val')).label_by_func(parent_labeler)
    kept, dropped = ll.to_dls(bs=64, num_workers=0), ll.to_dls(bs=64, num_workers=0, drop_last=True)
    assert (len(kept.train), len(dropped.train)) == (5, 4)        # 300 images: 4 batches of 64 and one of 44
    assert [len(y) for _, y in dropped.train] == [64]*4
    assert sum(len(y) for _, y in dropped.valid) == sum(len(y) for _, y in kept.valid) == 300   # validation keeps all
