"The GPU benchmarks' code runs end to end on any device (`--smoke`), so a GPU session is not spent finding a typo."
import os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(name, *args):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'Agg'}
    return subprocess.run([sys.executable, str(ROOT / 'bench' / name), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_fast_path_smoke_runs_every_measurement():
    res = bench('fast_path.py', '--smoke')
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert 'FAILED' not in out and '0 failed' in out, out
    for row in ('minimal loop, graph', 'Learner+fast_cbs, graph', 'deterministic mode: epoch', 'minimal loop, eager',
                'Learner+fast_cbs, eager', 'eager step, float16', 'minimal loop, graph, bs 2048', 'seed 1'):
        assert row in out, f"{row!r} missing:\n{out}"


def test_time_to_acc_smoke_runs_every_row_and_the_learner_matches_plain_pytorch():
    res = bench('time_to_acc.py', '--smoke')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    acc = {m.group(1).strip(): float(m.group(2)) for m in
           re.finditer(r'^(.{24}) per epoch \(train s, acc\): \([\d.]+, ([\d.]+)\)', res.stdout, re.M)}
    assert set(acc) == {'Learner (miniai train)', 'plain PyTorch', 'Learner, GPU fast path', 'plain PyTorch, fast'}, res.stdout
    # the same model, data order, optimizer, schedule and flips: the Learner computes what the hand-written loop does
    assert abs(acc['Learner (miniai train)'] - acc['plain PyTorch']) < 0.01, acc
    assert abs(acc['Learner, GPU fast path'] - acc['plain PyTorch, fast']) < 0.01, acc
