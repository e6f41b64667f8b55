"Image folders as training data (`miniai.images`, `miniai train --images`): layouts, modes, sizes, the cache, bad input."
import shutil

import pytest
import torch
from PIL import Image


@pytest.fixture(scope='module')
def colour_flat(tmp_path_factory, image_cache):
    "300 real Fashion-MNIST pictures of 3 classes in DIR/<class>/: greyscale 28×28 and resized, colour at other sizes."
    from miniai.images import write_fashion_folder
    return write_fashion_folder(tmp_path_factory.mktemp('data')/'flat', n_per_class=100)


@pytest.fixture(scope='module')
def grey_split(tmp_path_factory, image_cache):
    "Greyscale pictures (28×28 and resized) in DIR/train/<class>/ + DIR/valid/<class>/."
    from miniai.images import write_fashion_folder
    return write_fashion_folder(tmp_path_factory.mktemp('data')/'split', n_per_class=60, layout='split', colour=0)


def test_flat_colour_folder_mixed_modes_and_sizes(colour_flat):
    from miniai.images import image_folder_data
    ims = [Image.open(f) for f in sorted(colour_flat.rglob('*.*'))]
    assert {im.mode for im in ims} >= {'L', 'RGB', 'RGBA', 'P'} and len({im.size for im in ims}) > 50
    data = image_folder_data(colour_flat, progress=False)
    assert data.classes == ['bag', 'sneaker', 'trouser'] and data.n_in == 3 and data.preprocess.size == 64
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape[1:] == (3, 64, 64)
    assert [int((data.y_train == i).sum()) for i in range(3)] == [80]*3      # 20% of each class held out
    assert [int((data.y_valid == i).sum()) for i in range(3)] == [20]*3
    assert data.info['layout'].startswith('20% of each class') and not data.info['from_cache']
    # normalised with the training pictures' own statistics
    xb = torch.cat([x for x, _ in data.dls(64).train])
    assert xb.mean((0, 2, 3)).abs().max() < 1e-3 and (xb.std((0, 2, 3)) - 1).abs().max() < 1e-2
    again = image_folder_data(colour_flat, progress=False)
    assert again.info['from_cache'] and torch.equal(again.x_train, data.x_train) and torch.equal(again.y_valid, data.y_valid)


@pytest.mark.parametrize('valid_name', ['valid', 'val', 'test'])
def test_split_greyscale_folder(grey_split, tmp_path, valid_name):
    from miniai.images import image_folder_data
    path = grey_split
    if valid_name != 'valid':
        path = tmp_path/'split'; shutil.copytree(grey_split, path); (path/'valid').rename(path/valid_name)
    data = image_folder_data(path, progress=False)
    assert data.n_in == 1 and data.preprocess.mode == 'L' and data.preprocess.size == 28   # greyscale: Fashion's size
    assert (len(data.x_train), len(data.x_valid)) == (180, 45) and data.info['layout'] == f'{valid_name}/ folder'
    big = image_folder_data(path, size=40, progress=False)
    assert big.x_train.shape[1:] == (1, 40, 40) and not big.info['from_cache']   # another size: another cache entry


def test_the_cache_follows_the_files(colour_flat, tmp_path):
    from miniai.images import image_folder_data, scan_image_folder, _cache_file
    path = tmp_path/'copy'; shutil.copytree(colour_flat, path)
    first = image_folder_data(path, progress=False)
    assert image_folder_data(path, progress=False).info['from_cache']
    victim = sorted((path/'bag').iterdir())[0]
    Image.open(victim).convert('RGB').rotate(90).save(victim.with_suffix('.png'))   # one picture changed
    if victim.suffix != '.png': victim.unlink()
    changed = image_folder_data(path, progress=False)
    assert not changed.info['from_cache'] and not torch.equal(changed.x_train, first.x_train)
    fn = _cache_file(scan_image_folder(path), None)
    fn.write_bytes(b'damaged')                              # a damaged cache is rebuilt, with a warning
    assert torch.equal(image_folder_data(path, progress=False).x_train, changed.x_train)


def test_exif_orientation_and_preprocess_round_trip(tmp_path):
    from miniai.images import Preprocess
    photo = Image.fromarray(torch.arange(60, dtype=torch.uint8).repeat(30, 1).mul(4).numpy())   # 60 wide, 30 high
    exif = Image.Exif(); exif[0x0112] = 6                   # "turn 90° clockwise to view"
    photo.save(tmp_path/'p.jpg', exif=exif, quality=95)
    seen = Preprocess('L', 30).to_bytes(tmp_path/'p.jpg')[0].float()
    assert seen.std(0).mean() > 5*seen.std(1).mean()        # the ramp runs down the picture once it is upright
    pre = Preprocess('RGB', 16, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    assert Preprocess(**pre.to_dict()) == pre


def test_fashion_data_gives_fashion_dls_batches():
    from miniai.images import fashion_data
    from miniai.datasets import fashion_dls
    torch.manual_seed(1); a = next(iter(fashion_data(n_train=1024, n_valid=512).dls(128).train))
    torch.manual_seed(1); b = next(iter(fashion_dls(128, n_train=1024, n_valid=512).train))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _folder(root, *names, png=True):
    "A folder holding `names` (paths relative to it): small real PNGs, or empty files if not `png`."
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        (root/n).parent.mkdir(parents=True, exist_ok=True)
        if png and n.endswith('.png'): Image.new('L', (12, 12), color=i*20).save(root/n)
        else: (root/n).write_bytes(b'')
    return root


def _truncated(root):
    root = _folder(root, *[f'{c}/{i}.png' for c in ('cat', 'dog') for i in range(12)])
    fn = root/'dog'/'3.png'; fn.write_bytes(fn.read_bytes()[:40])
    return root


@pytest.mark.parametrize('make, extra, msg', [
    (lambda p: p/'nowhere', [], 'no such folder'),
    (lambda p: _folder(p/'empty'), [], 'it is empty'),
    (lambda p: _folder(p/'loose', 'a.png', 'b.png'), [], 'no class folders'),
    (lambda p: _folder(p/'one', 'cat/1.png', 'cat/2.png'), [], 'two or more'),
    (lambda p: _folder(p/'noimg', 'cat/1.png', 'cat/2.png', 'dog/notes.txt'), [], 'no image files'),
    (lambda p: _folder(p/'extra', 'train/cat/1.png', 'train/dog/1.png', 'valid/cow/1.png'), [], 'no counterpart'),
    (lambda p: _folder(p/'ok', 'cat/1.png', 'dog/1.png'), ['--valid-pct', '1.5'], '--valid-pct must be'),
    (lambda p: _folder(p/'ok2', 'cat/1.png', 'dog/1.png'), ['--subset', '100'], 'for Fashion-MNIST'),
    (lambda p: _truncated(p/"t"), [], "3.png is not a readable image"),
])
def test_bad_folders_are_one_line_exit_2_nothing_written(tmp_path, capsys, image_cache, make, extra, msg):
    import miniai.train as mt
    path, out = make(tmp_path), tmp_path/'run'
    assert mt.main(['train', '--images', str(path), '--recipe', 'simple_cnn', '--epochs', '1', '--out', str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('miniai train: error: ') and msg in err[0], err
    assert not out.exists() or not any(out.iterdir())       # no partial report


def test_skip_bad_skips_and_counts(tmp_path, capsys, image_cache):
    from miniai.images import image_folder_data, ImageFolderError
    path = _truncated(tmp_path/'t')
    with pytest.raises(ImageFolderError, match='--skip-bad'): image_folder_data(path, progress=False)
    data = image_folder_data(path, skip_bad=True, progress=False)
    assert data.info['n_skipped'] == 1 and data.info['skipped'] == ['dog/3.png'] and len(data.x_train) + len(data.x_valid) == 23
    assert 'unreadable' in data.summary()


def test_truncated_picture_from_the_command_line(tmp_path, image_cache):
    "The real command: a subprocess, exit status 2, one line naming the file, no traceback."
    import subprocess, sys
    path = _truncated(tmp_path/'t')
    res = subprocess.run([sys.executable, '-m', 'miniai', 'train', '--images', str(path), '--out', str(tmp_path/'o')],
                         capture_output=True, text=True)
    assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [l for l in res.stderr.strip().splitlines() if str(path/'dog'/'3.png') in l]
    assert not (tmp_path/'o'/'metrics.json').exists()


def test_size_options_need_images(capsys):
    import miniai.train as mt
    assert mt.main(['train', '--size', '32']) == 2 and 'go with --images' in capsys.readouterr().err
