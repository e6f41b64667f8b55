"Checkpoints: atomic saves, refusing bad files, exact resume in a new process, the NaN guard, Ctrl-C, seeding."
import os, subprocess, sys, textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miniai.callbacks import Callback
from miniai.checkpoint import CheckpointCB, CheckpointError, atomic_save, read_checkpoint
from miniai.conv import simple_cnn
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import Learner, MetricsCB, MomentumLearner, NonFiniteLossError, ProgressCB, TrainCB
from miniai.metrics import Accuracy


def small_dls():
    return fashion_dls(bs=64, n_train=640, n_valid=256)


def make_learner(cbs=(), nfs=(8, 16, 32, 64)):
    set_seed(0)
    return MomentumLearner(simple_cnn(nfs=nfs, norm=True), small_dls(), F.cross_entropy, lr=0.1,
                           cbs=[MetricsCB(accuracy=Accuracy()), *cbs])


RUN = textwrap.dedent('''
    import sys, torch, torch.nn.functional as F
    from miniai.datasets import fashion_dls, set_seed
    from miniai.conv import simple_cnn
    from miniai.metrics import Accuracy
    from miniai.learner import MomentumLearner, MetricsCB
    import miniai.checkpoint   # adds Learner.save and Learner.load
    mode, n, ckpt, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    set_seed(0)
    metrics = MetricsCB(accuracy=Accuracy())
    learn = MomentumLearner(simple_cnn(norm=True), fashion_dls(bs=64, n_train=640, n_valid=256), F.cross_entropy,
                            lr=0.1, cbs=[metrics])
    if mode == 'resume': learn.load(ckpt)
    learn.fit(n)
    if mode == 'first': learn.save(ckpt)
    torch.save({'model': learn.model.state_dict(),
                'history': [{k: v for k, v in r.items() if k != 'time'} for r in metrics.history]}, out)
''')


def test_exact_resume_in_a_new_process(tmp_path):
    (tmp_path / 'run.py').write_text(RUN)
    def run(*args): subprocess.run([sys.executable, str(tmp_path / 'run.py'), *map(str, args)], check=True)
    run('straight', 4, tmp_path / 'x.pth', tmp_path / 'straight.pt')
    run('first', 2, tmp_path / 'ckpt.pth', tmp_path / 'first.pt')
    run('resume', 4, tmp_path / 'ckpt.pth', tmp_path / 'resumed.pt')
    a, b = torch.load(tmp_path / 'straight.pt'), torch.load(tmp_path / 'resumed.pt')
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert a['history'] == b['history'] and len(a['history']) == 8


def test_same_seed_same_metrics():
    def run():
        learn = make_learner()
        learn.fit(1)
        return [{k: v for k, v in r.items() if k != 'time'} for r in learn.metrics.history]
    assert run() == run()


def test_bad_checkpoints_are_refused_and_nothing_changes(tmp_path):
    learn = make_learner()
    learn.save(tmp_path / 'good.pth', epochs_done=0)
    raw = (tmp_path / 'good.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(raw[:len(raw)//3])
    (tmp_path / 'junk.pth').write_bytes(b'\x00' * 100)
    torch.save({'a': 1}, tmp_path / 'notours.pth')
    make_learner(nfs=(8, 16, 32, 48)).save(tmp_path / 'other.pth', epochs_done=0)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    for name, msg in [('cut.pth', 'truncated or corrupt'), ('junk.pth', 'truncated or corrupt'),
                      ('notours.pth', 'not a miniai checkpoint'), ('other.pth', 'different shapes'),
                      ('missing.pth', 'no such checkpoint')]:
        with pytest.raises(CheckpointError, match=msg) as e:
            learn.load(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(CheckpointError, match=r"3\.0\.weight"):   # names the mismatching keys
        learn.load(tmp_path / 'other.pth')
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())
    assert (tmp_path / 'good.pth').read_bytes() == raw


def test_interrupted_save_keeps_previous_file(tmp_path):
    class Crash:
        def __reduce__(self): raise RuntimeError('crash during save')
    atomic_save({'v': 1}, tmp_path / 'c.pth')
    before = (tmp_path / 'c.pth').read_bytes()
    with pytest.raises(RuntimeError, match='crash during save'):
        atomic_save({'v': Crash()}, tmp_path / 'c.pth')
    assert (tmp_path / 'c.pth').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.pth']


def test_nan_guard_names_epoch_and_batch_and_keeps_last_checkpoint(tmp_path):
    class Poison(Callback):
        def after_predict(self, learn):
            if learn.epoch == 1 and learn.training and learn.iter == 4: learn.preds = learn.preds * float('nan')
    ck = tmp_path / 'ck.pth'
    learn = make_learner([CheckpointCB(ck), Poison()])
    with pytest.raises(NonFiniteLossError, match=r'epoch 1, batch 4 \(training\)'):
        learn.fit(3)
    state = read_checkpoint(ck)
    assert state['epochs_done'] == 1
    assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())


def test_ctrl_c_leaves_checkpoint_of_last_epoch_and_learner_reusable(tmp_path):
    class CtrlC(Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.iter == 2: raise KeyboardInterrupt
    ck = tmp_path / 'ck.pth'
    learn = make_learner([CheckpointCB(ck), ProgressCB()])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3, cbs=[CtrlC()])
    assert read_checkpoint(ck)['epochs_done'] == 1
    assert not any(isinstance(c, CtrlC) for c in learn.cbs)
    assert not any(m._forward_hooks for m in learn.model.modules())
    learn.fit(1)


def test_checkpoint_cb_keeps_best(tmp_path):
    learn = make_learner([CheckpointCB(tmp_path / 'last.pth', monitor='accuracy')])
    learn.fit(2)
    best = read_checkpoint(tmp_path / 'last-best.pth')
    accs = [r['accuracy'] for r in learn.metrics.history if r['phase'] == 'valid']
    assert best['epochs_done'] == 1 + accs.index(max(accs))
    with pytest.raises(ValueError, match="no such validation metric"):
        make_learner([CheckpointCB(tmp_path / 'x.pth', monitor='acc')]).fit(1)


def test_resume_with_miniai_schedulers_is_exact(tmp_path):
    "A one-cycle BatchSchedCB (miniai.sched) interrupted after 2 of 4 epochs and resumed gives the same weights."
    from functools import partial
    from miniai.callbacks import CancelFitException
    from miniai.sched import BatchSchedCB, OneCycle
    def learner():
        set_seed(0)
        dls = fashion_dls(bs=64, n_train=640, n_valid=256)
        sched = BatchSchedCB(partial(OneCycle, max_lr=0.05, total_steps=4*len(dls.train)))
        return Learner(simple_cnn(norm=True), dls, F.cross_entropy, lr=0.05, cbs=[TrainCB(), sched],
                       opt_func=partial(torch.optim.SGD, momentum=0.9))
    class StopAfter2(Callback):
        order = 60   # after CheckpointCB has saved epoch 2
        def after_epoch(self, learn):
            if not learn.training and learn.epoch == 1: raise CancelFitException()
    straight = learner(); straight.fit(4)
    first = learner(); first.fit(4, cbs=[CheckpointCB(tmp_path / 'ck.pth'), StopAfter2()])
    resumed = learner(); resumed.load(tmp_path / 'ck.pth'); resumed.fit(4)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    "A file whose pickle calls `exec` on load (what `weights_only=False` would run) is refused in one line."
    marker = tmp_path / 'ran.txt'
    class Payload:
        def __reduce__(self): return (exec, (f"open({str(marker)!r}, 'w').write('payload ran')",))
    learn = make_learner()
    good = learn.save(tmp_path / 'good.pth', epochs_done=0)
    state = torch.load(good, weights_only=True)
    state['callbacks']['MetricsCB'] = Payload()          # a well-formed checkpoint otherwise
    torch.save(state, tmp_path / 'evil.pth')
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    for load in (lambda: learn.load(tmp_path / 'evil.pth'), lambda: read_checkpoint(tmp_path / 'evil.pth')):
        with pytest.raises(CheckpointError, match=r'evil\.pth: refused: it refers to `exec`.*nothing in it was run') as e:
            load()
        assert '\n' not in str(e.value)
    assert not marker.exists()
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_old_formats_are_refused_with_a_clear_message(tmp_path):
    import numpy as np
    torch.save({'format': 1, 'model': {}, 'epochs_done': 1}, tmp_path / 'v1.pth')
    with pytest.raises(CheckpointError, match='format 1; this version reads format 2'):
        read_checkpoint(tmp_path / 'v1.pth')
    torch.save({'format': 1, 'model': {}, 'rng': {'numpy': np.random.get_state()}}, tmp_path / 'v1np.pth')
    with pytest.raises(CheckpointError, match=r'refused: .*numpy.*before format 2'):
        read_checkpoint(tmp_path / 'v1np.pth')


def test_rng_states_are_tensors_and_plain_values_and_round_trip(tmp_path):
    import random
    import numpy as np
    from miniai.checkpoint import rng_states, set_rng_states
    atomic_save(rng_states(), tmp_path / 'rng.pth')
    a = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    set_rng_states(torch.load(tmp_path / 'rng.pth', weights_only=True))
    b = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    assert a[:3] == b[:3] and torch.equal(a[3], b[3])


def test_cuda_rng_state_is_saved_and_restored(tmp_path, monkeypatch):
    "With CUDA present (patched here), the checkpoint carries every GPU's generator state and `load` puts it back."
    gpu_states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all', lambda: [s.clone() for s in gpu_states])
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device: restored.append((device, state.clone())))
    learn = make_learner()
    learn.fit(1)
    learn.save(tmp_path / 'ck.pth')
    saved = read_checkpoint(tmp_path / 'ck.pth')['rng']['cuda']
    assert len(saved) == 2 and all(torch.equal(a, b) for a, b in zip(saved, gpu_states))
    resumed = make_learner()
    resumed.load(tmp_path / 'ck.pth')
    assert restored == []                                   # restored when the next fit starts, by ResumeCB
    resumed.fit(2)
    assert [d for d, _ in restored] == [0, 1] and all(torch.equal(a, b) for (_, a), b in zip(restored, gpu_states))
    # resumed on a machine with one GPU: its state is restored, and a warning says the other one's is not
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    restored.clear()
    resumed = make_learner()
    resumed.load(tmp_path / 'ck.pth')
    with pytest.warns(UserWarning, match='states of 2 GPUs and this machine has 1'): resumed.fit(2)
    assert [d for d, _ in restored] == [0] and torch.equal(restored[0][1], gpu_states[0])


def test_deterministic_training_sets_and_restores_everything(monkeypatch):
    from miniai.checkpoint import deterministic_training
    cudnn = torch.backends.cudnn
    def settings():
        return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                cudnn.deterministic, cudnn.benchmark, os.environ.get('CUBLAS_WORKSPACE_CONFIG'))
    for env in (None, ':16:8'):
        if env is None: monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
        else: monkeypatch.setenv('CUBLAS_WORKSPACE_CONFIG', env)
        monkeypatch.setattr(cudnn, 'benchmark', True)
        before = settings()
        with deterministic_training():
            assert settings() == (True, True, True, False, env or ':4096:8')
        assert settings() == before
        with pytest.raises(RuntimeError, match='inside'):
            with deterministic_training(warn_only=False):
                assert settings()[:2] == (True, False)
                raise RuntimeError('inside')
        assert settings() == before


def test_a_gpu_runs_execution_flags_stay_behind(tmp_path):
    "A CUDA-graph run's checkpoint holds AdamW's `capturable=True`; resumed on the CPU, the CPU optimizer keeps its own flags."
    def learner():
        set_seed(0)
        return Learner(simple_cnn(nfs=(8, 16, 32, 64), norm=True), small_dls(), F.cross_entropy, lr=1e-3, cbs=[TrainCB()],
                       opt_func=torch.optim.AdamW)
    straight = learner(); straight.fit(2)
    learn = learner(); learn.fit(1); learn.save(tmp_path / 'ck.pth')
    state = read_checkpoint(tmp_path / 'ck.pth')
    state['opt']['param_groups'][0]['capturable'] = True   # as GraphedStep leaves it on a GPU
    atomic_save(state, tmp_path / 'gpu.pth')
    resumed = learner(); resumed.load(tmp_path / 'gpu.pth')
    resumed.fit(2)                                          # a capturable AdamW step on the CPU would fail here
    assert resumed.opt.param_groups[0]['capturable'] is False
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()))


# ---- an evaluation pass (or the lr finder, or a look at a batch) neither saves nor uses up a resume ----

def _no_time(history): return [{k: v for k, v in r.items() if k != 'time'} for r in history]


def _evaluation_passes():
    "Each way the public API runs a fit that is not part of training: name -> f(learn)."
    from miniai.augment import capture_preds, tta_preds
    return {'capture_preds': capture_preds, 'tta_preds': tta_preds,
            'fit(train=False)': lambda learn: learn.fit(1, train=False),
            'lr_find': lambda learn: learn.lr_find(plot=False),
            'show_image_batch': lambda learn: learn.show_image_batch(max_n=4)}


@pytest.mark.parametrize('name', list(_evaluation_passes()))
def test_an_evaluation_pass_does_not_rewrite_the_checkpoint(tmp_path, name):
    ck = tmp_path / 'ck.pth'
    learn = make_learner([CheckpointCB(ck, monitor='accuracy')])
    learn.fit(1)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    _evaluation_passes()[name](learn)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize('name', list(_evaluation_passes()))
def test_an_evaluation_pass_right_after_load_leaves_the_resume_for_the_next_fit(tmp_path, name):
    "`load`, look at the predictions (or find an lr), then `fit`: the run the uninterrupted one is."
    straight = make_learner()
    straight.fit(2)
    first = make_learner()
    first.fit(1)
    first.save(tmp_path / 'ck.pth')
    resumed = make_learner()
    resumed.load(tmp_path / 'ck.pth')
    _evaluation_passes()[name](resumed)
    resumed.fit(2)
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in straight.model.state_dict().items())
    assert _no_time(resumed.metrics.history) == _no_time(straight.metrics.history)


def test_save_after_an_evaluation_pass_records_the_epochs_trained(tmp_path):
    from miniai.augment import capture_preds
    learn = make_learner()
    learn.fit(2)
    capture_preds(learn)
    assert read_checkpoint(learn.save(tmp_path / 'ck.pth'))['epochs_done'] == 2
