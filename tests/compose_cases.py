"""The cases of the composition matrix (`tests/test_compose.py`): each feature of miniai trained three ways and
compared with its uninterrupted run. Imported by the tests; run under torchrun (`python -m torch.distributed.run
--nproc-per-node 2 tests/compose_cases.py OUT`) for the data-parallel cases, which write each rank's results to OUT.

A run: 3 epochs of 6 shuffled batches of 16 (synthetic data, 20 features, 4 classes) through a small MLP with
BatchNorm (buffers) and Dropout (the random generator matters), with metrics, a record of every batch and a
checkpoint after every epoch. The three ways, each stopped after epoch 1 as Ctrl-C would stop it:
- `resume`: a new Learner loads the checkpoint and fits to the end;
- `eval_between`: the stopped Learner shows its predictions (`capture_preds`, `tta_preds`, `lr_find`), then loads
  the checkpoint and fits to the end;
- `eval_after_load`: a new Learner loads the checkpoint, shows its predictions, then fits to the end.
The result (weights, gradients, optimizer, every callback's state including the metric history, random generators)
must be bit-identical to the uninterrupted run's, and no file in the checkpoint folder may change during an
evaluation pass."""
import random, sys, traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miniai.learner import Learner, MomentumLearner, TrainCB, DeviceCB, MetricsCB
from miniai.callbacks import Callback
from miniai.metrics import Accuracy
from miniai.datasets import DataLoaders, tensor_dl
from miniai.checkpoint import CheckpointCB, checkpoint_state
from miniai.sgd import RecorderCB
from miniai.sched import OneCycleCB
from miniai.augment import capture_preds, tta_preds
from miniai.averaging import EMACB, LookaheadCB
from miniai.accel import MixedPrecision

N_EPOCHS, STOP_AFTER = 3, 1
FEATURES = ('plain', 'momentum', 'ema', 'lookahead', 'bf16', 'fp16')
SCENARIOS = ('resume', 'eval_between', 'eval_after_load')

def seed_all(seed):
    "Seed the generators without touching the deterministic-algorithms switch (a CUDA run sets it around the cases)."
    torch.manual_seed(seed); random.seed(seed); np.random.seed(seed)

def make_dls(seed=0, n=96, bs=16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 4, generator=g)
    x, xv = torch.randn(n, 20, generator=g), torch.randn(64, 20, generator=g)
    noisy = lambda x: (x @ w + 0.5*torch.randn(len(x), 4, generator=g)).argmax(1)
    return DataLoaders(tensor_dl(x, noisy(x), bs=bs, shuffle=True), tensor_dl(xv, noisy(xv), bs=32))

def make_model():
    return nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))

def feature_cbs(feature, lr):
    "The training callbacks of `feature` (the learner class and optimizer are chosen in `make_learner`)."
    sched = lambda: OneCycleCB(lr)
    return {'plain': lambda: [TrainCB(), sched()], 'momentum': lambda: [],
            'ema': lambda: [TrainCB(), sched(), EMACB(0.8, validate=True)],
            'lookahead': lambda: [TrainCB(), sched(), LookaheadCB(k=4)],
            'bf16': lambda: [MixedPrecision(dtype=torch.bfloat16), sched()],
            'fp16': lambda: [MixedPrecision(dtype=torch.float16), sched()],
            }[feature]()

def loss_func(feature):
    # fp16: a loss 64 times larger (AdamW's steps do not depend on the loss's scale) overflows fp16 gradients at the
    # GradScaler's first scale, so the scale falls within the first epoch and is far from its default at the checkpoint
    return (lambda p, y: 64*F.cross_entropy(p, y)) if feature == 'fp16' else F.cross_entropy

def make_learner(feature, ck, device='cpu', seed=0, extra_cbs=(), main=True):
    """A fresh learner of `feature` checkpointing to `ck` (only where `main`: rank 0), its model seeded with `seed`;
    `extra_cbs`: more callbacks, or a function making them (each learner needs its own)."""
    if callable(extra_cbs): extra_cbs = extra_cbs()
    seed_all(seed)
    model, dls = make_model(), make_dls()
    metrics = [MetricsCB(accuracy=Accuracy(), quiet=True)]
    common = [DeviceCB(device), *metrics, RecorderCB(), *([CheckpointCB(ck)] if main else []), *extra_cbs]
    if feature == 'momentum':
        return MomentumLearner(model, dls, F.cross_entropy, lr=0.05, cbs=common)
    lr = 1e-2
    return Learner(model, dls, loss_func(feature), lr=lr, cbs=[*feature_cbs(feature, lr), *common],
                   opt_func=torch.optim.AdamW)

class Stop(Exception): "Stands for Ctrl-C."

class StopAfter(Callback):
    "Stop fitting (like Ctrl-C) once epoch `n` is complete and checkpointed."
    order = CheckpointCB.order + 1
    def __init__(self, n=STOP_AFTER): self.n = n
    def after_epoch(self, learn):
        if learn.epoch + 1 == self.n and not (learn.training and learn.do_valid): raise Stop()

def strip(o):
    "`o` with tensors on the CPU and the timing column of metric histories left out (it differs run to run)."
    if isinstance(o, torch.Tensor): return o.detach().cpu()
    if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if k != 'time'}
    if isinstance(o, (list, tuple)): return type(o)(strip(v) for v in o)
    return o

def result(learn):
    "Everything a checkpoint would hold: weights, gradients, optimizer, callbacks' states, random generators."
    return strip(checkpoint_state(learn, N_EPOCHS))

def differences(a, b, path=''):
    "Where the nested results `a` and `b` differ (bitwise for tensors), as a list of paths."
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
               a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in (differences(a[k], b[k], f'{path}/{k}') if k in a and k in b else [f'{path}/{k} (missing)'])]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b): return [f'{path} (length {len(a)} vs {len(b)})']
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in differences(x, y, f'{path}[{i}]')]
    return [] if a == b else [path]

def snapshot(folder):
    "The bytes and modification times of every file in `folder`."
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}

def uninterrupted(feature, folder, **kw):
    learn = make_learner(feature, Path(folder)/'checkpoint.pth', **kw)
    learn.fit(N_EPOCHS)
    return result(learn)

def interrupted(feature, ck, **kw):
    "A learner of `feature` stopped after epoch `STOP_AFTER` (its checkpoint written to `ck`)."
    learn = make_learner(feature, ck, **kw)
    try: learn.fit(N_EPOCHS, cbs=StopAfter())
    except Stop: pass
    else: raise AssertionError('the run was not stopped')
    return learn

def evaluation_pass(learn, lr_find=True):
    "Look at predictions the ways a student would: plain, with test-time augmentation, and (optionally) the lr finder."
    preds, targs = capture_preds(learn)
    assert len(preds) == len(targs) > 0
    tta_preds(learn)
    if lr_find: learn.lr_find(max_epochs=2, plot=False)

def run_scenario(scenario, feature, folder, barrier=lambda: None, lr_find=True, **kw):
    """Run `feature` interrupted in `scenario`; return `(result, changed)`: the final state and the files that an
    evaluation pass changed in `folder` (none, when it is right). `barrier` waits for the other ranks (DDP)."""
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    ck, changed = folder/'checkpoint.pth', []
    first = interrupted(feature, ck, **kw)
    barrier()   # the checkpoint is written (by rank 0) before anyone reads it
    def watched(f):
        before = snapshot(folder)
        f()
        after = snapshot(folder)
        changed.extend(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
    if scenario == 'resume':
        learn = make_learner(feature, ck, **{**kw, 'seed': 1})
        learn.load(ck)
    elif scenario == 'eval_between':
        learn = first
        watched(lambda: evaluation_pass(learn, lr_find))
        barrier()
        learn.load(ck)
    elif scenario == 'eval_after_load':
        learn = make_learner(feature, ck, **{**kw, 'seed': 1})
        learn.load(ck)
        watched(lambda: evaluation_pass(learn, lr_find=False))
        barrier()
    else: raise ValueError(f"unknown scenario {scenario!r}")
    learn.fit(N_EPOCHS)
    return result(learn), changed


# ---- data-parallel cases: run under torchrun, 2 gloo processes ----
class Seen:
    "A metric whose state is a list: the targets seen; `compute` gives how many, and their sum (each item counted once)."
    dist_states = ('ys',)
    def reset(self): self.ys = []
    def update(self, preds, ys): self.ys.append(ys)
    def compute(self): return torch.tensor(len(torch.cat(self.ys)) + 1000*int(torch.cat(self.ys).sum()))

def ddp_main(out):
    "Every scenario of the `plain` feature under DDP, plus torcheval's accuracy beside miniai's; each rank saves its results."
    import torch.distributed as dist
    from torcheval.metrics import MulticlassAccuracy
    from miniai.distributed import DDPCB, ddp_setup
    out = Path(out)
    with ddp_setup('cpu') as (rank, world):
        kw = lambda: dict(main=rank == 0, extra_cbs=lambda: [DDPCB()])   # only rank 0 writes checkpoints, as in `miniai train`
        res = {'world': world, 'uninterrupted': uninterrupted('plain', out/'straight', **kw())}
        for sc in SCENARIOS:
            # a scenario that fails (the same way on both ranks) is reported by the test, and the others still run
            try: res[sc] = run_scenario(sc, 'plain', out/sc, barrier=dist.barrier, **kw())
            except Exception as e: res[sc] = f"{sc} failed: {traceback.format_exc()}"
            dist.barrier()
        # torcheval's accuracy and miniai's on the same predictions, reduced over the ranks; and a metric with a list state
        tv = MulticlassAccuracy()
        metrics = MetricsCB(mine=Accuracy(), tv=tv, seen=Seen(), quiet=True)
        seed_all(0)
        learn = Learner(make_model(), make_dls(), F.cross_entropy, lr=1e-2, opt_func=torch.optim.AdamW,
                        cbs=[TrainCB(), metrics, DDPCB()])
        learn.fit(2)
        res['metrics'] = strip(metrics.history)
        res['tv_settings'] = {'k': tv.k, 'average': tv.average, 'num_classes': tv.num_classes}
        torch.save(res, out/f'rank{rank}.pt')

if __name__ == '__main__': ddp_main(sys.argv[1])
