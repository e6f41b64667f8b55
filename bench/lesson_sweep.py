"""Seed and learning-rate sweeps for the lesson experiments of 07_init, 07a_norm and 08c_accel_sgd (full data).

Each run prints one JSON line: experiment, batch size, learning rate(s), seed, valid accuracy per epoch, seconds.
Used to choose the settings the notebooks use and to measure their run-to-run spread. The runs behind the numbers
quoted in 07_init, 07a_norm and 08c_accel_sgd are in bench/lesson_sweep_results.jsonl (2-core x86-64 CPU, one thread
per run, two or more runs sharing the machine, so `secs` are pessimistic).

Usage: .venv/bin/python bench/lesson_sweep.py EXPERIMENT [--bs 1024] [--lr 0.2] [--seeds 42 1 2] [--threads 1]
Experiments: gr (GeneralRelu + Kaiming), ln (LayerNorm), bn (our BatchNorm), bn5 (nn.BatchNorm2d, 3 epochs at --lr
then 2 at --lr2; bn5s: 3 at --lr, 1 at --lr2, 1 at --lr2/5; bn41: 4 at --lr, 1 at --lr2), sgd, rmsprop (08c's model with miniai's SGD / RMSProp),
ecos (08c: torch AdamW with an epoch-stepped cosine schedule), oc (08c: AdamW + fit_one_cycle; use --epochs 5)."""
import argparse, json, time
from functools import partial
import torch
from torch import nn
import torch.nn.functional as F
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import Learner, MomentumLearner, TrainCB, DeviceCB, MetricsCB
from miniai.metrics import Accuracy
from miniai.init import get_model, GeneralRelu, init_weights, BatchTransformCB
from miniai.norm import LayerNorm, BatchNorm
from torch.optim import lr_scheduler
from miniai.sgd import SGD, RMSProp
from miniai.sched import EpochSchedCB, fit_one_cycle

def _norm(b): return (b[0]-0.28)/0.35, b[1]
act_gr = partial(GeneralRelu, leak=0.1, sub=0.4)
iw = partial(init_weights, leaky=0.1)

def _valid_accs(metrics): return [round(h['accuracy'], 4) for h in metrics.history if h['phase'] == 'valid']

def run(exp, bs, lr, lr2, seed, epochs):
    set_seed(seed)
    dls = fashion_dls(bs, normalize=exp in ('sgd', 'rmsprop', 'ecos', 'oc'))
    set_seed(seed)
    metrics = MetricsCB(accuracy=Accuracy(), quiet=True)
    norm = {'gr': None, 'ln': LayerNorm, 'bn': BatchNorm, 'bn5': nn.BatchNorm2d, 'bn5s': nn.BatchNorm2d, 'bn41': nn.BatchNorm2d, 'sgd': nn.BatchNorm2d, 'rmsprop': nn.BatchNorm2d, 'ecos': nn.BatchNorm2d, 'oc': nn.BatchNorm2d}[exp]
    model = get_model(act_gr, norm=norm).apply(iw)
    start = time.perf_counter()
    if exp in ('sgd', 'rmsprop'):
        opt = partial(SGD, wd=1e-4) if exp == 'sgd' else RMSProp
        learn = Learner(model, dls, F.cross_entropy, lr=lr, cbs=[TrainCB(), metrics], opt_func=opt)
        learn.fit(epochs)
    elif exp == 'oc':
        learn = Learner(model, dls, F.cross_entropy, lr=lr, cbs=[TrainCB(), metrics],
                        opt_func=partial(torch.optim.AdamW, eps=1e-5))
        fit_one_cycle(learn, epochs, max_lr=lr)
    elif exp == 'ecos':
        learn = Learner(model, dls, F.cross_entropy, lr=lr, cbs=[TrainCB(), metrics],
                        opt_func=partial(torch.optim.AdamW, eps=1e-5))
        learn.fit(epochs, cbs=[EpochSchedCB(partial(lr_scheduler.CosineAnnealingLR, T_max=epochs))])
    else:
        learn = MomentumLearner(model, dls, F.cross_entropy, lr=lr, cbs=[DeviceCB(), metrics, BatchTransformCB(_norm)])
        learn.fit(epochs + (exp == 'bn41'))
        if exp == 'bn5': learn.fit(2, lr=lr2)
        if exp == 'bn5s': learn.fit(1, lr=lr2); learn.fit(1, lr=lr2/5)
        if exp == 'bn41': learn.fit(1, lr=lr2)
    secs = time.perf_counter() - start
    return dict(exp=exp, bs=bs, lr=lr, lr2=lr2 if exp in ('bn5', 'bn5s', 'bn41') else None, seed=seed, epochs=epochs,
                acc=round(metrics.last('valid')['accuracy'], 4), valid_accs=_valid_accs(metrics),
                secs=round(secs))

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('exp'); p.add_argument('--bs', type=int, default=1024); p.add_argument('--lr', type=float, default=0.2)
    p.add_argument('--lr2', type=float, default=0.05); p.add_argument('--seeds', type=int, nargs='+', default=[42])
    p.add_argument('--epochs', type=int, default=3); p.add_argument('--threads', type=int, default=0)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    for s in a.seeds: print(json.dumps(run(a.exp, a.bs, a.lr, a.lr2, s, a.epochs)), flush=True)
