"""The GPU fast path measured, to choose its defaults: time to 0.92 test accuracy and seconds per epoch of the flagship
ResNet with the data on the device (uint8), per-image flips, bf16 autocast and channels-last, trained (a) by a minimal
loop around `miniai.accel.GraphedStep` and (b) by `Learner` + `fast_cbs`, with and without CUDA graphs, for a few batch
sizes and learning rates; then the cost of deterministic mode and fp16 vs bf16. All in one run, side by side.

    python bench/fast_path.py [--budget 150] [--compile]

`--budget` (seconds) stops starting new configurations once spent. Without CUDA it says so and exits 0.
"""
import argparse, contextlib, io, os, sys, time, traceback, warnings
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # needed by deterministic cuBLAS; set before CUDA starts
import torch
from torch import nn

from miniai.accel import FAST_GPU, GraphedStep, GraphTrainCB, ChannelsLastCB, fast_cbs, fast_dls, time_train_step
from miniai.augment import FLAGSHIP, flagship_model, rand_flip, aug_cb, RandFlip
from miniai.datasets import set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB
from miniai.metrics import Accuracy
from miniai.sched import BatchSchedCB

T0 = time.perf_counter()

def sync(): torch.cuda.synchronize()

def evaluate(model, dl, dtype=torch.bfloat16):
    model.eval(); correct = torch.zeros((), device='cuda', dtype=torch.long)
    with torch.no_grad(), torch.autocast('cuda', dtype=dtype or torch.float32, enabled=dtype is not None):
        for xb, yb in dl: correct += (model(xb).argmax(1) == yb).sum()
    model.train()
    return correct.item()/len(dl.x)

def make(lr, total, compile_mode=None):
    model = flagship_model().to('cuda').to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=FLAGSHIP['wd'])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, cycle_momentum=False)
    fwd = torch.compile(model, mode=compile_mode) if compile_mode else model
    return model, fwd, opt, sched

def minimal_loop(bs, lr, epochs, graphs=True, dtype=torch.bfloat16, compile_mode=None, seed=42):
    "Returns [(cumulative train s, test acc)] per epoch: the loop a person would write around GraphedStep."
    set_seed(seed)
    dls = fast_dls(bs, 'cuda')
    model, fwd, opt, sched = make(lr, epochs*len(dls.train), compile_mode)
    step = GraphedStep(fwd, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), opt, dtype, graphs=graphs)
    out, train_s = [], 0.
    for _ in range(epochs):
        sync(); t = time.perf_counter()
        for xb, yb in dls.train:
            step(rand_flip(xb), yb); sched.step()
        sync(); train_s += time.perf_counter() - t
        out.append((train_s, evaluate(model, dls.valid, dtype)))
    return out, step

def with_learner(bs, lr, epochs, graphs=True, seed=42):
    set_seed(seed)
    dls = fast_dls(bs, 'cuda')
    metrics = MetricsCB(accuracy=Accuracy(), quiet=True)
    sched = BatchSchedCB(lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs*len(dls.train), cycle_momentum=False))
    learn = Learner(flagship_model(), dls, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), lr=lr,
                    opt_func=lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=FLAGSHIP['wd']),
                    cbs=[DeviceCB('cuda'), *fast_cbs(graphs=graphs), aug_cb(RandFlip()), metrics, sched])
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(epochs)
    out, train_s = [], 0.
    for r in metrics.history:
        if r['phase'] == 'train': train_s += r['time']
        else: out.append((train_s, r['accuracy']))
    return out, learn.cbs[1].run if isinstance(learn.cbs[1], GraphTrainCB) else None

def report(name, curve, step=None, thr=0.92):
    first = next(((s, i + 1) for i, (s, a) in enumerate(curve) if a >= thr), None)
    per_epoch = [b[0] - a[0] for a, b in zip([(0, 0)] + curve, curve)]
    steady = sorted(per_epoch[1:])[len(per_epoch[1:])//2] if len(per_epoch) > 1 else per_epoch[0]
    graph = '' if step is None else f"  graph={'yes' if step.graph is not None else 'no'}{' (' + step.why_eager + ')' if step.why_eager else ''}"
    print(f"{name:44s} to {thr}: {f'{first[0]:5.2f}s (epoch {first[1]})' if first else '  not reached  '}  "
          f"epoch 1 {per_epoch[0]:.2f}s, median later epoch {steady:.3f}s, final acc {curve[-1][1]:.4f}{graph}", flush=True)

def epoch_time(deterministic, epochs=2, bs=1024):
    "Median seconds of an eager training epoch (no graph) with/without deterministic algorithms."
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, False
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            curve, _ = minimal_loop(bs, FAST_GPU['lr'], epochs, graphs=False)
        nondet = sorted({str(x.message).split(' does not have')[0][:80] for x in w if 'deterministic' in str(x.message)})
        return curve[-1][0] - curve[-2][0], nondet
    finally:
        torch.use_deterministic_algorithms(False); torch.backends.cudnn.deterministic = False

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--budget', type=float, default=150)
    p.add_argument('--compile', action='store_true', help="also try torch.compile(mode='reduce-overhead') (slow to compile)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("fast_path: no CUDA GPU on this machine: nothing measured (the fast path is for CUDA GPUs)."); return 0
    print(f"{torch.cuda.get_device_name()} | torch {torch.version.__version__ if hasattr(torch.version, '__version__') else torch.__version__}"
          f" | CUDA {torch.version.cuda} | FAST_GPU {FAST_GPU}", flush=True)
    bs, lr = FAST_GPU['bs'], FAST_GPU['lr']
    runs = [  # (name, function, kwargs)
        (f'minimal loop, graph, bs {bs}, lr {lr}, 8 ep', minimal_loop, dict(bs=bs, lr=lr, epochs=8)),
        (f'minimal loop, eager, bs {bs}, lr {lr}, 8 ep', minimal_loop, dict(bs=bs, lr=lr, epochs=8, graphs=False)),
        (f'Learner+fast_cbs, graph, bs {bs}, 8 ep', with_learner, dict(bs=bs, lr=lr, epochs=8)),
        (f'Learner+fast_cbs, eager, bs {bs}, 8 ep', with_learner, dict(bs=bs, lr=lr, epochs=8, graphs=False)),
        ('minimal loop, graph, bs 512, lr 1e-2, 6 ep', minimal_loop, dict(bs=512, lr=1e-2, epochs=6)),
        ('minimal loop, graph, bs 1024, lr 2e-2, 6 ep', minimal_loop, dict(bs=1024, lr=2e-2, epochs=6)),
        ('minimal loop, graph, bs 2048, lr 3e-2, 10 ep', minimal_loop, dict(bs=2048, lr=3e-2, epochs=10)),
        ('minimal loop, graph, bs 1024, lr 3e-2, 8 ep', minimal_loop, dict(bs=1024, lr=3e-2, epochs=8)),
        ('minimal loop, graph, fp32 (no autocast), 8 ep', minimal_loop, dict(bs=bs, lr=lr, epochs=8, dtype=None)),
        ('minimal loop, graph, seed 1, 8 ep', minimal_loop, dict(bs=bs, lr=lr, epochs=8, seed=1)),
    ]
    for name, fn, kw in runs:
        if time.perf_counter() - T0 > args.budget: print(f"(budget spent: skipped {name})"); continue
        try:
            curve, step = fn(**kw); report(name, curve, step)
        except Exception as e: print(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}"); traceback.print_exc(limit=3)
    try:
        t_fast, _ = epoch_time(False); t_det, nondet = epoch_time(True)
        print(f"deterministic mode (eager epoch, bs {bs}): {t_det:.3f}s vs {t_fast:.3f}s = {t_det/t_fast:.2f}x; "
              f"ops without a deterministic kernel: {nondet or 'none'}", flush=True)
    except Exception as e: print(f"deterministic: FAILED {type(e).__name__}: {str(e)[:300]}")
    try:
        xb = torch.randn(bs, 1, 28, 28, device='cuda'); yb = torch.randint(0, 10, (bs,), device='cuda')
        for dt in (torch.bfloat16, torch.float16, torch.bfloat16, torch.float16):
            t = time_train_step(flagship_model(), xb, yb, amp=True, channels_last=True, n=10, dtype=dt)
            print(f"eager step, {str(dt)[6:]} autocast + channels-last, bs {bs}: {t*1000:.2f} ms", flush=True)
        t = time_train_step(flagship_model(), xb, yb, amp=False, channels_last=False, n=10)
        print(f"eager step, fp32 NCHW, bs {bs}: {t*1000:.2f} ms", flush=True)
    except Exception as e: print(f"precision step times: FAILED {type(e).__name__}: {str(e)[:300]}")
    if args.compile and time.perf_counter() - T0 < args.budget:
        try:
            t = time.perf_counter()
            curve, step = minimal_loop(bs, lr, 8, graphs=False, compile_mode='reduce-overhead')
            report(f"torch.compile reduce-overhead (incl. compile in epoch 1)", curve, None)
            print(f"  (whole run {time.perf_counter() - t:.1f}s)")
        except Exception as e: print(f"torch.compile: FAILED {type(e).__name__}: {str(e)[:300]}")
    print(f"fast_path: {time.perf_counter() - T0:.0f}s in all")
    return 0

if __name__ == '__main__': sys.exit(main())
