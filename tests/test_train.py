"The `miniai train` command: argument errors before training (exit 2), the report, exact --resume."
import json, signal, subprocess, sys, time

import pytest
import torch


def miniai(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'miniai', 'train', *map(str, args)], capture_output=True, text=True, **kw)


@pytest.mark.parametrize('args, msg', [
    (['--recipe', 'nope'], 'is unknown'),
    (['--epochs', '0'], '--epochs must be a positive integer'),
    (['--bs', '-4'], '--bs must be a positive integer'),
    (['--lr', '0'], '--lr must be > 0'),
    (['--out', '/proc/miniai-no'], 'cannot write there'),
    (['--data', '/nonexistent/fmnist'], 'Fashion-MNIST was not found'),
    (['--resume', '--out', '{tmp}/empty'], 'no checkpoint'),
    (['--precision', 'fp8'], "--precision 'fp8' is unknown"),
])
def test_bad_arguments_exit_2_with_one_message(tmp_path, args, msg):
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    if '--out' not in args: args += ['--out', str(tmp_path / 'o')]
    res = miniai(*args)
    assert res.returncode == 2, res.stderr
    assert msg in res.stderr and 'Traceback' not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3


def test_help_lists_every_option():
    res = miniai('--help')
    for opt in ('--recipe', '--epochs', '--lr', '--bs', '--seed', '--out', '--device', '--resume', '--subset', '--data',
                '--precision'):
        assert opt in res.stdout


def test_report_and_exact_resume_after_ctrl_c(tmp_path):
    common = ['--recipe', 'simple_cnn', '--epochs', '3', '--subset', '4096', '--bs', '128', '--seed', '3']
    assert miniai('--out', tmp_path / 'straight', *common).returncode == 0
    # the same run, interrupted with Ctrl-C (SIGINT) once the first epoch's checkpoint exists
    split = tmp_path / 'split'
    # A job started in the background by a non-interactive shell (as CI may run us) inherits SIGINT as *ignored*,
    # and Python then never raises KeyboardInterrupt: give the child the default handler, as a terminal would.
    proc = subprocess.Popen([sys.executable, '-m', 'miniai', 'train', '--out', str(split), *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while not (split / 'checkpoint.pth').exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, 'the run finished before the interrupt arrived: widen the window (--subset/--epochs)'
    assert proc.returncode == 130 and '--resume' in err and 'Traceback' not in err, err
    res = miniai('--out', split, '--resume', *common)
    assert res.returncode == 0, res.stderr
    assert 'resuming after epoch' in res.stdout
    a = torch.load(tmp_path / 'straight' / 'model.pth'); b = torch.load(split / 'model.pth')
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((tmp_path / 'straight' / 'metrics.json').read_text())
    rb = json.loads((split / 'metrics.json').read_text())
    strip = lambda h: [{k: v for k, v in r.items() if k != 'time'} for r in h]
    assert strip(ra['history']) == strip(rb['history']) and ra['test_accuracy'] == rb['test_accuracy']
    for name in ('loss.png', 'lr.png', 'confusion.png', 'examples.png', 'checkpoint.pth'):
        assert (tmp_path / 'straight' / name).stat().st_size > 0
    assert sum(map(sum, ra['confusion_matrix'])) == 10_000
    assert {'python', 'torch', 'miniai'} <= set(ra['versions'])
    # resuming with other settings is refused clearly
    bad = miniai('--out', split, '--resume', *common[:-2], '--seed', '3', '--epochs', '5')
    assert bad.returncode == 2 and 'original run' in bad.stderr and 'Traceback' not in bad.stderr


def test_precision_is_resolved_and_reported(tmp_path):
    from miniai.accel import resolve_precision, precision_cbs, MixedPrecision, ChannelsLastCB, bf16_fast_on_cpu
    from miniai.learner import TrainCB
    assert resolve_precision('auto', 'cpu') == ('bf16' if bf16_fast_on_cpu() else 'fp32')
    assert resolve_precision('auto', 'cuda') == 'fp16' and resolve_precision('fp32', 'cuda') == 'fp32'
    assert [type(c) for c in precision_cbs('fp32')] == [TrainCB]
    cbs = precision_cbs('bf16')
    assert [type(c) for c in cbs] == [MixedPrecision, ChannelsLastCB] and cbs[0].dtype == torch.bfloat16
    res = miniai('--recipe', 'resnet', '--epochs', '1', '--subset', '1024', '--precision', 'bf16', '--out', tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / 'metrics.json').read_text())
    assert report['precision'] == 'bf16' and report['test_accuracy'] > 0.3   # 1 epoch on 1,024 images: far above chance


def test_record_recipe_trains_with_its_settings(tmp_path):
    from miniai.train import RECIPES
    from miniai.augment import RECORDS, RandCrop, RandFlip, RandErase
    r = RECIPES['record20']
    assert (r.epochs, r.lr, r.pct_start, r.precision) == (20, RECORDS[20]['lr'], RECORDS[20]['pct_start'], 'auto')
    assert [type(t) for t in r.make_tfms()] == [RandCrop, RandFlip, RandErase]
    res = miniai('--recipe', 'record5', '--epochs', '1', '--subset', '512', '--out', tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / 'metrics.json').read_text())
    assert report['recipe'] == 'record5' and report['epochs'] == 1 and 0 <= report['test_accuracy'] <= 1
