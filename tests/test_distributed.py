"""Data-parallel `miniai train` on 2 CPU processes (torchrun, gloo): the same global batch gives the single-process
weights, only rank 0 writes or prints, and a global batch that does not divide by the processes is refused. The runs
pin `--device cpu`, so they are the same on a GPU machine; an NCCL run needs two GPUs and is skipped elsewhere. Which
process gets which GPU (and the one-line refusal when there are too few) is tested with the GPU count patched."""
import json, textwrap

import pytest
import torch

from launch import run, torchrun

# 4 optimizer steps (512 images, global batch 128) of the simple_cnn recipe: no random augmentation, so both runs see
# the same batches in the same order, and DistBatchNorm normalises with the global batch's statistics.
COMMON = ['--recipe', 'simple_cnn', '--epochs', '1', '--bs', '128', '--seed', '1', '--subset', '512', '--device', 'cpu']

# Runs `miniai` (as `python -m miniai` does) after installing an audit hook that logs, per rank, every file opened
# for writing, created, renamed or removed inside AUDIT_DIR. Rank 0's log shows the hook sees the report being written.
AUDIT = textwrap.dedent('''
    import os, sys, runpy
    root = os.path.realpath(os.environ['AUDIT_DIR'])
    log = open(os.path.join(os.environ['AUDIT_LOG'], 'rank%s.log' % os.environ.get('RANK', '0')), 'w', buffering=1)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def inside(p):
        try: return isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(p)).startswith(root)
        except (TypeError, ValueError): return False
    def hook(event, args):
        if event == 'open':
            path, mode, flags = args
            if inside(path) and ((mode and any(c in mode for c in 'wax+')) or (flags or 0) & WRITE): log.write(f'open {path}\\n')
        elif event in ('os.rename', 'os.mkdir', 'os.remove', 'os.rmdir', 'os.unlink', 'os.truncate'):
            if any(inside(a) for a in args[:2]): log.write(f'{event} {args[:2]}\\n')
    sys.addaudithook(hook)
    sys.argv = ['miniai', *sys.argv[1:]]
    runpy.run_module('miniai', run_name='__main__', alter_sys=True)
''')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    single = run(['-m', 'miniai', 'train', '--out', tmp/'single', *COMMON])
    assert single.returncode == 0, single.stderr[-3000:]
    (tmp/'audit').mkdir()
    (tmp/'audit.py').write_text(AUDIT)
    ddp = torchrun(tmp/'audit.py', 'train', '--out', tmp/'ddp', *COMMON,
                   env={'AUDIT_DIR': str(tmp/'ddp'), 'AUDIT_LOG': str(tmp/'audit')})
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-4000:]
    return tmp, single, ddp

def test_two_processes_match_one_with_the_same_global_batch(runs):
    tmp, single, ddp = runs
    a, b = torch.load(tmp/'single'/'model.pth'), torch.load(tmp/'ddp'/'model.pth')
    assert sorted(a) == sorted(b)                       # the plain model's keys: no 'module.' prefix from DDP
    rel = {k: ((a[k] - b[k]).abs().max()/a[k].abs().max()).item() for k in a if a[k].is_floating_point()}
    # The two runs do the same arithmetic in another order (per-rank sums, then all-reduce), so they differ by float32
    # rounding (~1e-7), which AdamW then amplifies: it divides each gradient element by its own magnitude, so a
    # rounding-size change of a near-zero gradient changes its step by up to lr. After these 4 steps the largest
    # difference measured here is 1.3e-5 (and 3e-6 between two single-process runs on 1 and 2 threads); 1e-4 allows
    # for other CPUs' kernels. Unsynchronised BatchNorm (measured 0.9) or a different global batch would be off by >1e-3
    # (the two controls below).
    assert max(rel.values()) < 1e-4, sorted(rel.items(), key=lambda kv: -kv[1])[:3]
    ra, rb = (json.loads((tmp/n/'metrics.json').read_text()) for n in ('single', 'ddp'))
    assert rb['processes'] == 2 and rb['bs'] == ra['bs'] == 128
    for x, y in zip(ra['history'], rb['history']):      # the all-reduced metrics are the whole set's
        assert x['phase'] == y['phase'] and abs(x['loss'] - y['loss']) < 1e-4*abs(x['loss'])
        assert abs(x['accuracy'] - y['accuracy']) <= 2/512
    assert sum(map(sum, rb['confusion_matrix'])) == 10_000 and abs(ra['test_accuracy'] - rb['test_accuracy']) <= 2e-4

def test_a_different_global_batch_is_far_away(runs):
    # the control for the tolerance above: the single-process run with batch 64 instead of 128
    tmp, *_ = runs
    res = run(['-m', 'miniai', 'train', '--out', tmp/'bs64', *COMMON[:-6], '--seed', '1', '--subset', '256', '--bs', '64', '--device', 'cpu'])
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = torch.load(tmp/'single'/'model.pth'), torch.load(tmp/'bs64'/'model.pth')
    assert max(((a[k] - b[k]).abs().max()/a[k].abs().max()).item() for k in a if a[k].is_floating_point()) > 1e-3

def test_only_rank_0_writes_and_prints(runs):
    tmp, single, ddp = runs
    logs = {p.name: p.read_text().splitlines() for p in (tmp/'audit').iterdir()}
    assert sorted(logs) == ['rank0.log', 'rank1.log']
    assert logs['rank1.log'] == []                                      # rank 1 wrote nothing in the output folder
    written = ' '.join(logs['rank0.log'])
    for name in ('metrics.json', 'loss.png', 'confusion.png', 'checkpoint.pth', 'model.pth'): assert name in written
    assert sorted(p.name for p in (tmp/'ddp').iterdir()) == sorted(p.name for p in (tmp/'single').iterdir())
    assert ddp.stdout.count('test accuracy') == 1 and ddp.stdout.count('report written to') == 1
    assert '2 processes' in ddp.stdout

def test_global_batch_must_divide_by_the_processes(tmp_path):
    res = torchrun('-m', 'miniai', 'train', '--out', tmp_path/'o', *COMMON[:4], '--bs', '127', '--device', 'cpu')
    assert res.returncode != 0
    assert '--bs 127 must be divisible by the 2 processes' in res.stderr and 'try --bs 126' in res.stderr

def test_unsynchronised_batchnorm_is_far_away(runs):
    # the other control: the same 2-process run with each rank's BatchNorm normalising by its own 64 images
    tmp, *_ = runs
    (tmp/'nosync.py').write_text("import sys, miniai.train as T\nT.sync_batchnorm = lambda model, device: model\n"
                                 "sys.exit(T.main(sys.argv[1:]))\n")
    res = torchrun(tmp/'nosync.py', 'train', '--out', tmp/'nosync', *COMMON)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = torch.load(tmp/'single'/'model.pth'), torch.load(tmp/'nosync'/'model.pth')
    assert max(((a[k] - b[k]).abs().max()/a[k].abs().max()).item() for k in a if a[k].is_floating_point()) > 1e-3


# ---- --resume under torchrun: every rank gets its own random generators back ----
# The lessons' CNN with per-image random flips, so that each rank's random stream matters (rank 1 draws its own flips);
# validated on 512 test images; with STOP_AFTER_EPOCH_1 set, every rank stops like Ctrl-C once epoch 1 is checkpointed.
RESUMABLE = textwrap.dedent("""
    import os, sys
    import miniai.train as T
    from miniai.recipes import Recipe
    from miniai.augment import RandFlip
    from miniai.conv import simple_cnn
    from miniai.callbacks import Callback
    from miniai.checkpoint import CheckpointCB
    from functools import partial
    T.fashion_data = partial(T.fashion_data, n_valid=512)   # a smaller test set: the run's validations take no time
    T.RECIPES['flip_cnn'] = Recipe('flip_cnn', 'the lessons CNN with random flips',
                                   lambda n_in=1, n_out=10: simple_cnn(n_in=n_in, n_out=n_out, norm=True),
                                   lr=1e-2, bs=128, epochs=2, make_tfms=lambda: [RandFlip()])
    class StopAfterEpoch1(Callback):
        order = CheckpointCB.order + 1
        def after_epoch(self, learn):
            if learn.epoch == 0 and not learn.training: raise KeyboardInterrupt
    if os.environ.get('STOP_AFTER_EPOCH_1'):
        Learner = T.Learner
        T.Learner = lambda *a, cbs=(), **kw: Learner(*a, cbs=[*cbs, StopAfterEpoch1()], **kw)
    sys.exit(T.main(sys.argv[1:]))
""")

def test_resume_under_torchrun_is_exact(tmp_path):
    (tmp_path/'resumable.py').write_text(RESUMABLE)
    args = ['train', '--recipe', 'flip_cnn', '--seed', '2', '--subset', '512', '--device', 'cpu']
    straight = torchrun(tmp_path/'resumable.py', *args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun(tmp_path/'resumable.py', *args, '--out', tmp_path/'split', env={'STOP_AFTER_EPOCH_1': '1'})
    assert stopped.returncode != 0 and (tmp_path/'split'/'checkpoint.pth').is_file(), stopped.stderr[-3000:]
    resumed = torchrun(tmp_path/'resumable.py', *args, '--out', tmp_path/'split', '--resume')
    assert resumed.returncode == 0 and 'resuming after epoch 1 of 2' in resumed.stdout, resumed.stderr[-3000:]
    a, b = torch.load(tmp_path/'straight'/'model.pth'), torch.load(tmp_path/'split'/'model.pth')
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((tmp_path/n/'metrics.json').read_text()) for n in ('straight', 'split'))
    strip = lambda h: [{k: v for k, v in r.items() if k != 'time'} for r in h]
    assert strip(ra['history']) == strip(rb['history']) and ra['processes'] == rb['processes'] == 2

# ---- processes to GPUs: `rank_device` under torchrun's variables, with the machine's GPU count patched ----
from miniai.distributed import NotEnoughGPUsError, ddp_setup, rank_device

def _as_rank(monkeypatch, local, world, n_gpus):
    for k, v in dict(RANK=local, WORLD_SIZE=world, LOCAL_RANK=local, LOCAL_WORLD_SIZE=world).items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: n_gpus > 0)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: n_gpus)

@pytest.mark.parametrize('local, world, n_gpus', [(0, 2, 2), (1, 2, 2), (3, 4, 8), (0, 2, 1)])
def test_each_process_gets_its_own_gpu(monkeypatch, local, world, n_gpus):
    _as_rank(monkeypatch, local, world, n_gpus)
    assert rank_device('cuda') == torch.device('cuda', local)
    assert rank_device('cpu') == torch.device('cpu')       # gloo on the CPU: no GPU involved, whatever the count

@pytest.mark.parametrize('local, world, n_gpus', [(1, 2, 1), (2, 4, 2), (0, 2, 0)])
def test_too_few_gpus_is_one_clear_line(monkeypatch, local, world, n_gpus):
    _as_rank(monkeypatch, local, world, n_gpus)
    with pytest.raises(NotEnoughGPUsError) as e: rank_device('cuda')
    msg = str(e.value)
    assert '\n' not in msg and f'{world} processes on this machine but {n_gpus} CUDA GPU(s)' in msg
    assert f'--nproc-per-node {max(n_gpus, 1)}' in msg and '--device cpu' in msg

def test_ddp_setup_refuses_before_joining(monkeypatch):
    _as_rank(monkeypatch, 1, 2, 1)
    with pytest.raises(NotEnoughGPUsError):
        with ddp_setup('cuda'): pass
    assert not torch.distributed.is_initialized()

def test_one_process_keeps_the_device_it_was_given(monkeypatch):
    _as_rank(monkeypatch, 0, 1, 4)
    assert rank_device('cuda') == torch.device('cuda', 0) and rank_device('cuda:2') == torch.device('cuda', 2)

N_GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0

@pytest.mark.skipif(N_GPUS < 2, reason=f'NCCL data parallelism needs 2 CUDA GPUs, this machine has {N_GPUS}')
def test_nccl_two_gpus_train_like_one(tmp_path):
    args = ['train', *COMMON[:-2], '--device', 'cuda']
    one = run(['-m', 'miniai', *args, '--out', tmp_path/'one'])
    two = torchrun('-m', 'miniai', *args, '--out', tmp_path/'two')
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-3000:]
    ra, rb = (json.loads((tmp_path/n/'metrics.json').read_text()) for n in ('one', 'two'))
    assert rb['processes'] == 2 and rb['device'].startswith('cuda')
    # cuDNN and NCCL sum in other orders than the CPU: the loose yardstick of two different global batches (>1e-3) still holds
    assert abs(ra['test_accuracy'] - rb['test_accuracy']) < 0.02


# ---- which metrics DDPCB can combine over ranks (no process group needed for the check itself) ----
def test_a_metric_that_declares_no_state_is_refused_by_name():
    from torcheval.metrics import MulticlassAccuracy
    from miniai.distributed import reduce_metric, _check_reducible
    from miniai.metrics import Accuracy, Mean
    for m in (Accuracy(), Mean(), MulticlassAccuracy()): _check_reducible(m)   # declared: miniai's, torcheval's
    class Guess:                      # keeps its state in attributes, but says nothing about which ones
        def __init__(self): self.hits, self.n = 0, 0
        def merge_state(self, others): pass   # a method of the same name is not torcheval's protocol
    with pytest.raises(TypeError, match=r'cannot combine the metric Guess over processes: it declares no state.*dist_states'):
        reduce_metric(Guess())
    class Odd:
        dist_states = ('name',)
        name = 'x'
    with pytest.raises(TypeError, match=r'Odd\.name is a str'): reduce_metric(Odd())
