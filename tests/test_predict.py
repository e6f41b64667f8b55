"A trained run, used: the report of `miniai train --images`, `load_run`, `miniai predict` (files, folders, bad input)."
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def miniai(*args, exe=None):
    cmd = [exe] if exe else [sys.executable, '-m', 'miniai']
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})


@pytest.fixture(scope='module')
def images_run(tmp_path_factory, image_cache):
    "The default recipe (flips, 'auto' precision) trained from the command line on 3 classes of real pictures at 32×32."
    from miniai.images import write_fashion_folder
    root = tmp_path_factory.mktemp('images')
    folder = write_fashion_folder(root/'clothes', n_per_class=100)
    res = miniai('train', '--images', folder, '--size', '32', '--epochs', '2', '--out', root/'runs'/'clothes')
    assert res.returncode == 0, res.stderr
    return folder, root/'runs'/'clothes', res


@pytest.fixture(scope='module')
def fashion_run(tmp_path_factory, image_cache):
    "A short Fashion-MNIST run of the lessons' CNN (written as `miniai train` always wrote them)."
    out = tmp_path_factory.mktemp('fashion')/'run'
    res = miniai('train', '--recipe', 'simple_cnn', '--epochs', '1', '--subset', '2048', '--bs', '128', '--out', out)
    assert res.returncode == 0, res.stderr
    return out


def _valid_files(folder):
    from miniai.images import scan_image_folder
    scan = scan_image_folder(folder)
    return ([f for f, v in zip(scan.files, scan.is_valid) if v],
            torch.tensor([l for l, v in zip(scan.labels, scan.is_valid) if v]), scan.classes)


def test_the_report_of_an_images_run(images_run):
    folder, out, res = images_run
    report = json.loads((out/'metrics.json').read_text())
    assert report['classes'] == ['bag', 'sneaker', 'trouser'] and report['format'] == 1
    pre = report['preprocess']
    assert pre['mode'] == 'RGB' and pre['size'] == 32 and len(pre['mean']) == 3
    assert report['data']['n_train'] == 240 and report['data']['n_valid'] == 60 and report['data']['images'] == str(folder)
    assert report['bs'] == 32   # the recipe's 256, halved until an epoch of 240 pictures has enough batches
    assert sum(map(sum, report['confusion_matrix'])) == 60 and len(report['confusion_matrix']) == 3
    assert report['test_accuracy'] > 0.8 and 'test_accuracy_tta' in report   # 3 easy classes; the flagship flips
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pth', 'confusion.png', 'examples.png', 'loss.png',
                                                    'lr.png', 'metrics.json', 'model.pth']
    assert 'validation accuracy' in res.stdout and 'converted in' in res.stdout
    assert (out.parent/'latest').resolve() == out.resolve() and 'latest points at it' in res.stdout


def test_load_run_reproduces_the_reported_accuracy(images_run):
    from miniai.predict import load_run
    folder, out, _ = images_run
    report = json.loads((out/'metrics.json').read_text())
    files, targs, classes = _valid_files(folder)
    run = load_run(out, device='cpu')
    assert run.classes == classes and run.recipe.flips
    acc = (run.predict(files).argmax(1) == targs).float().mean().item()
    acc_tta = (run.predict(files, tta=True).argmax(1) == targs).float().mean().item()
    assert (round(acc, 4), round(acc_tta, 4)) == (report['test_accuracy'], report['test_accuracy_tta'])
    # files, PIL images and a uint8 batch are the same pictures
    from PIL import Image
    p = run.predict(files[:5])
    assert torch.equal(p, run.predict([Image.open(f) for f in files[:5]]))
    assert torch.equal(p, run.predict(torch.stack([run.preprocess.to_bytes(f) for f in files[:5]])))
    top = run.top(files[0])
    assert len(top) == 1 and len(top[0]) == 3 and abs(sum(v for _, v in top[0]) - 1) < 1e-4


def test_predict_a_folder_from_the_command_line(images_run, tmp_path, capsys):
    "The validation pictures copied into a folder (sub-folders too): --json lines give the reported accuracy back."
    folder, out, _ = images_run
    files, targs, classes = _valid_files(folder)
    for f in files: (tmp_path/f.parent.name).mkdir(exist_ok=True); shutil.copy(f, tmp_path/f.parent.name/f.name)
    res = miniai('predict', out.parent/'latest', tmp_path, '--json', '--tta', '--device', 'cpu')
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in res.stdout.splitlines()]
    assert len(rows) == len(files) and all(len(r['top']) == 3 for r in rows)
    acc_tta = sum(r['top'][0]['class'] == Path(r['file']).parent.name for r in rows)/len(rows)
    assert round(acc_tta, 4) == json.loads((out/'metrics.json').read_text())['test_accuracy_tta']
    from miniai.predict import main
    assert main([str(out), str(files[0])]) == 0   # the plain format: the file, then the top 3 with their probabilities
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{files[0]}: ") and line.count(' | ') == 2, line


def test_an_unreadable_picture_gets_its_own_line(images_run, tmp_path, capsys):
    from miniai.predict import main
    folder, out, _ = images_run
    good = sorted((folder/'bag').glob('*.png'))[:2]
    broken = tmp_path/'broken.png'; broken.write_bytes(good[0].read_bytes()[:100])
    assert main([str(out), str(good[0]), str(broken), str(tmp_path/'missing.png'), str(good[1])]) == 1
    cap = capsys.readouterr()
    assert [l.split(':')[0] for l in cap.out.splitlines()] == [str(good[0]), str(good[1])]   # the others, in order
    err = cap.err.strip().splitlines()
    assert len(err) == 2 and str(broken) in err[0] and 'no such file' in err[1]


def _pickled_code(p): torch.save(torch.nn.Linear(2, 2), p/'model.pth')   # a whole module: unpickling it runs code
def _other_net(p):
    r = json.loads((p/'metrics.json').read_text()); r['recipe'] = 'record5'; (p/'metrics.json').write_text(json.dumps(r))
def _old_version(p):
    r = json.loads((p/'metrics.json').read_text()); del r['format']; (p/'metrics.json').write_text(json.dumps(r))

@pytest.mark.parametrize('damage, msg', [
    (lambda p: (p/'model.pth').write_bytes((p/'model.pth').read_bytes()[:3000]), 'truncated or corrupt'),
    (lambda p: (p/'model.pth').write_bytes(b'garbage'*100), 'not a readable model file'),
    (_pickled_code, 'refused'),
    (lambda p: (p/'model.pth').unlink(), 'has no model.pth'),
    (_other_net, 'does not fit this model'),
    (_old_version, 'an earlier version of miniai'),
    (lambda p: (p/'metrics.json').unlink(), 'has no metrics.json'),
    (lambda p: shutil.rmtree(p), 'no such run folder'),
])
def test_a_damaged_or_foreign_run_is_one_line_exit_2(images_run, tmp_path, capsys, damage, msg):
    from miniai.predict import main
    folder, out, _ = images_run
    run = tmp_path/'run'; shutil.copytree(out, run); damage(run)
    assert main([str(run), str(sorted((folder/'bag').glob('*.png'))[0])]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert cap.out == '' and len(err) == 1 and err[0].startswith('miniai predict: error: ') and msg in err[0], err


def test_tta_needs_a_recipe_that_flipped(fashion_run, capsys):
    from miniai.predict import main
    assert main([str(fashion_run), str(fashion_run/'loss.png'), '--tta']) == 2
    assert 'did not train with flips' in capsys.readouterr().err


def test_a_fashion_mnist_run_classifies_png_files(fashion_run, tmp_path):
    "Fashion-MNIST test pictures written as PNG files are classified as the run's model classifies the arrays."
    from miniai.predict import load_run
    from miniai.imagefolders import write_fashion_pngs
    from miniai.datasets import fashion_mnist_arrays, FASHION_CLASSES
    files = sorted((write_fashion_pngs(tmp_path/'png', n_per_class=3)/'val').rglob('*.png'))
    run = load_run(fashion_run, device='cpu')
    assert run.classes == FASHION_CLASSES and run.preprocess.size == 28
    x, y = fashion_mnist_arrays()['test']
    idx = [int(f.stem) for f in files]
    from_arrays = run.predict(torch.from_numpy(x[idx]).unsqueeze(1))
    assert torch.equal(run.predict(files), from_arrays)
    assert (from_arrays.argmax(1) == torch.from_numpy(y[idx])).float().mean() > 0.4   # 16 batches of training; chance: 0.1


def test_resume_with_another_size_is_refused(images_run, tmp_path, capsys):
    import miniai.train as mt
    folder, out, _ = images_run
    run = tmp_path/'run'; shutil.copytree(out, run)
    assert mt.main(['train', '--images', str(folder), '--size', '24', '--epochs', '2', '--out', str(run), '--resume']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'size 32' in err[0] and 'size 24' in err[0], err


def test_the_installed_console_script(images_run):
    "`.venv/bin/miniai predict runs/latest IMG.png`, as the README says (the venv's `miniai` script, this checkout's code)."
    exe = Path(sys.executable).parent/'miniai'
    if not exe.exists(): pytest.skip(f"no console script at {exe}")
    folder, out, _ = images_run
    res = miniai('predict', out.parent/'latest', sorted((folder/'trouser').glob('*.png'))[0], exe=str(exe))
    assert res.returncode == 0 and res.stdout.count(' | ') == 2, res.stderr
