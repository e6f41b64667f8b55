"""Time to accuracy on this machine: the flagship recipe trained by `Learner` (as `miniai train` does) and by a plain
PyTorch script with the same model, data, optimizer, schedule, loss and augmentation, in the same run. Prints the
training seconds each needed to first reach 0.90 and 0.92 test accuracy (evaluation time excluded for both).
On CUDA it adds the library's GPU fast path (`miniai.fastpath.fast_dls` + `fast_cbs`: data on the device as uint8,
per-image flips there, bf16 autocast, channels-last, CUDA graphs, `FAST_GPU`'s batch size and lr) trained by
`Learner`, and the same written as plain PyTorch (without graphs), with every row's time as a ratio to plain PyTorch.

    python bench/time_to_acc.py [--epochs 4] [--seed 42] [--smoke]

`--smoke` checks this script: every row (the fast path's too, on the CPU where there is no GPU) on 2,048 training and
512 test images for one epoch; the numbers mean nothing (tests/test_bench_smoke.py).
"""
import argparse, contextlib, io, time

import torch
from torch import nn

from miniai.augment import FLAGSHIP, aug_cb, flagship_model, flagship_tfms
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB, TrainCB
from miniai.metrics import Accuracy
from miniai.conv import def_device
from miniai.fastpath import FAST_GPU, fast_cbs, fast_dls, on_gpu
from miniai.augment import RandFlip, rand_flip
from miniai.sched import OneCycleCB

THRESHOLDS = (0.90, 0.92)


def plain_pytorch(dls, epochs, device):
    "The recipe written out by hand: returns [(cumulative training seconds, test accuracy)] per epoch."
    model = flagship_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=FLAGSHIP['lr'], weight_decay=FLAGSHIP['wd'])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, FLAGSHIP['lr'], total_steps=epochs*len(dls.train))
    loss_func = nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing'])
    out, train_s = [], 0.
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for xb, yb in dls.train:
            xb, yb = xb.to(device), yb.to(device)
            flip = torch.rand(len(xb), device=device) < 0.5                   # per-image random flip
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = loss_func(model(xb), yb)
            loss.backward(); opt.step(); sched.step(); opt.zero_grad()
        train_s += time.perf_counter() - t
        model.eval(); correct = n = 0
        with torch.no_grad():
            for xb, yb in dls.valid:
                correct += (model(xb.to(device)).argmax(1).cpu() == yb).sum().item(); n += len(yb)
        out.append((train_s, correct/n))
    return out


def _fit_curve(learn, epochs, metrics):
    "Fit quietly; [(cumulative training seconds, test accuracy)] per epoch from `metrics`' history."
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(epochs)
    out, train_s = [], 0.
    for r in metrics.history:
        if r['phase'] == 'train': train_s += r['time']
        else: out.append((train_s, r['accuracy']))
    return out


def with_learner(dls, epochs, device):
    "The recipe as `miniai train` runs it: returns [(cumulative training seconds, test accuracy)] per epoch."
    metrics = MetricsCB(accuracy=Accuracy())
    learn = Learner(flagship_model(), dls, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']),
                    lr=FLAGSHIP['lr'], opt_func=lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=FLAGSHIP['wd']),
                    cbs=[TrainCB(), DeviceCB(device), aug_cb(*flagship_tfms()), metrics, OneCycleCB(FLAGSHIP['lr'])])
    return _fit_curve(learn, epochs, metrics)


FAST_EPOCHS = FAST_GPU.get('epochs', 8)

SUBSET = {}   # --smoke: dict(n_train=, n_valid=)

def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize(device)

def plain_fast(epochs, device='cuda'):
    "The GPU fast path written as plain PyTorch (device data, per-image flips, bf16, channels-last; no CUDA graph)."
    bs, lr = FAST_GPU['bs'], FAST_GPU['lr']
    dls, kind = fast_dls(bs, device, **SUBSET), torch.device(device).type
    model = flagship_model().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=FLAGSHIP['wd'])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs*len(dls.train))
    loss_func = nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing'])
    out, train_s = [], 0.
    for _ in range(epochs):
        model.train(); _sync(device); t = time.perf_counter()
        for xb, yb in dls.train:
            with torch.autocast(kind, dtype=torch.bfloat16): loss = loss_func(model(rand_flip(xb)), yb)
            loss.backward(); opt.step(); sched.step(); opt.zero_grad()
        _sync(device); train_s += time.perf_counter() - t
        model.eval(); correct = torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16):
            for xb, yb in dls.valid: correct += (model(xb).argmax(1) == yb).sum()
        out.append((train_s, correct.item()/len(dls.valid.x)))
    return out

def learner_fast(epochs, device='cuda'):
    "The GPU fast path as the library gives it: `Learner` + `fast_dls` + `fast_cbs` + the flagship's flips."
    bs, lr = FAST_GPU['bs'], FAST_GPU['lr']
    dls = fast_dls(bs, device, **SUBSET)
    metrics = MetricsCB(accuracy=Accuracy())
    sched = OneCycleCB(lr, cycle_momentum=False)   # a CUDA graph replays the step: only the lr may change between steps
    learn = Learner(flagship_model(), dls, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), lr=lr,
                    opt_func=lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=FLAGSHIP['wd']),
                    cbs=[DeviceCB(device), *fast_cbs(graphs=True), aug_cb(RandFlip()), metrics, sched])
    return _fit_curve(learn, epochs, metrics)

def first_reach(curve, thr):
    return next((f"{s:6.1f}s (epoch {i + 1})" for i, (s, acc) in enumerate(curve) if acc >= thr), '   not reached')

def _reach_s(curve, thr): return next((s for s, acc in curve if acc >= thr), None)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=FLAGSHIP['epochs'])
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--smoke', action='store_true', help="check this script: every row on 2,048 images for one epoch, "
                   "the fast path's on the CPU where there is no GPU (the numbers mean nothing)")
    args = p.parse_args()
    fast_epochs = FAST_EPOCHS
    if args.smoke:
        SUBSET.update(n_train=2048, n_valid=512); args.epochs = fast_epochs = 1
        print(f"time_to_acc --smoke on {def_device}: every row on 2,048 images, one epoch; the numbers mean nothing")
    if FLAGSHIP.get('pad') or FLAGSHIP.get('erase'):
        raise SystemExit("the plain script only implements flips; update it to match FLAGSHIP's crop/erase first")
    dls = fashion_dls(bs=FLAGSHIP['bs'], **SUBSET)
    results = {}
    rows = [('Learner (miniai train)', lambda: with_learner(dls, args.epochs, def_device)),
            ('plain PyTorch', lambda: plain_pytorch(dls, args.epochs, def_device))]
    if on_gpu() or args.smoke:
        rows += [(f'Learner, GPU fast path', lambda: learner_fast(fast_epochs, def_device)),
                 (f'plain PyTorch, fast', lambda: plain_fast(fast_epochs, def_device))]
    for name, fn in rows:
        set_seed(args.seed)
        results[name] = fn()
        print(f"{name:24s} per epoch (train s, acc): " + ', '.join(f"({s:.1f}, {a:.4f})" for s, a in results[name]),
              flush=True)
    print(f"\n{'':24s} " + '  '.join(f"to {t:.2f}".ljust(20) for t in THRESHOLDS) + '  s/epoch (last)  vs plain, to 0.92')
    for name, curve in results.items():
        base = results['plain PyTorch, fast' if 'fast' in name else 'plain PyTorch']
        a, b = _reach_s(curve, 0.92), _reach_s(base, 0.92)
        ratio = f"{a/b:.2f}" if a and b else '-'
        last = curve[-1][0] - (curve[-2][0] if len(curve) > 1 else 0)
        print(f"{name:24s} " + '  '.join(first_reach(curve, t).ljust(20) for t in THRESHOLDS) + f"  {last:6.3f}          {ratio}")
    print(f"({args.epochs}-epoch one-cycle schedule" + (f"; fast path {fast_epochs} epochs, bs {FAST_GPU['bs']}, lr {FAST_GPU['lr']}"
          if on_gpu() else '') + f", seed {args.seed}, {def_device}, {torch.get_num_threads()} threads)")


if __name__ == '__main__':
    main()
