"""The GPU fast path measured, to choose its defaults: time to 0.92 test accuracy and seconds per epoch of the flagship
ResNet with the data on the device (uint8), per-image flips, bf16 autocast and channels-last, trained (a) by a minimal
loop around `miniai.fastpath.GraphedStep` and (b) by `Learner` + `fast_cbs`, with and without CUDA graphs, for a few batch
sizes and learning rates; the cost of deterministic mode (one line starting `deterministic`: an epoch with
`torch.use_deterministic_algorithms(True)`, `cudnn.deterministic=True`, `cudnn.benchmark=False` against one without);
`torch.compile(mode="reduce-overhead")` in place of our graphs; fp16 vs bf16 step times. All in one run, side by side.

    python bench/fast_path.py [--budget 150] [--no-compile] [--smoke]

The most important measurements run first; `--budget` (seconds) stops starting new ones once it would be exceeded, and
each one skipped is printed with the reason. Without CUDA it says so and exits 0. `--smoke` runs every measurement's
code on 2,048 images for one epoch on whatever device is here (the CPU too), without torch.compile: a check of
this script (tests/test_bench_smoke.py), whose numbers mean nothing.
"""
import argparse, contextlib, io, os, sys, time, traceback, warnings
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # needed by deterministic cuBLAS; set before CUDA starts
import torch
from torch import nn

from miniai.accel import time_train_step
from miniai.fastpath import FAST_GPU, GraphedStep, GraphTrainCB, fast_cbs, fast_dls
from miniai.augment import FLAGSHIP, flagship_model, rand_flip, aug_cb, RandFlip
from miniai.datasets import set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB
from miniai.metrics import Accuracy
from miniai.sched import OneCycleCB

T0 = time.perf_counter()
DEV = 'cuda'    # --smoke: the CPU where there is no GPU
SMOKE = None    # --smoke: dict(n_train=, n_valid=, max_epochs=)

def sync():
    if DEV == 'cuda': torch.cuda.synchronize()

def data(bs):
    return fast_dls(bs, DEV, **({k: SMOKE[k] for k in ('n_train', 'n_valid')} if SMOKE else {}))

def n_epochs(epochs): return min(epochs, SMOKE['max_epochs']) if SMOKE else epochs

def evaluate(model, dl, dtype=torch.bfloat16):
    model.eval(); correct = torch.zeros((), device=DEV, dtype=torch.long)
    with torch.no_grad(), torch.autocast(DEV, dtype=dtype or torch.float32, enabled=dtype is not None):
        for xb, yb in dl: correct += (model(xb).argmax(1) == yb).sum()
    model.train()
    return correct.item()/len(dl.x)

def make(lr, total, compile_mode=None):
    model = flagship_model().to(DEV).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=FLAGSHIP['wd'])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, cycle_momentum=False)
    fwd = torch.compile(model, mode=compile_mode) if compile_mode else model
    return model, fwd, opt, sched

def set_deterministic(on):
    "Deterministic algorithms and cuDNN settings on or off (CUBLAS_WORKSPACE_CONFIG is set at import, before CUDA starts)."
    torch.use_deterministic_algorithms(on, warn_only=True)   # an op without a deterministic kernel warns (listed below)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = on, False

def minimal_loop(bs, lr, epochs, graphs=True, dtype=torch.bfloat16, compile_mode=None, seed=42, deterministic=False):
    "Returns [(cumulative train s, test acc)] per epoch: the loop a person would write around GraphedStep."
    set_seed(seed)
    set_deterministic(deterministic)   # after set_seed, which sets torch's deterministic flag itself
    dls, epochs = data(bs), n_epochs(epochs)
    model, fwd, opt, sched = make(lr, epochs*len(dls.train), compile_mode)
    step = GraphedStep(fwd, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), opt, dtype, graphs=graphs)
    out, train_s = [], 0.
    for _ in range(epochs):
        sync(); t = time.perf_counter()
        for xb, yb in dls.train:
            if compile_mode: torch.compiler.cudagraph_mark_step_begin()   # a new training step for compile's graphs
            step(rand_flip(xb), yb); sched.step()
        sync(); train_s += time.perf_counter() - t
        out.append((train_s, evaluate(model, dls.valid, dtype)))
    return out, step

def with_learner(bs, lr, epochs, graphs=True, seed=42):
    set_seed(seed)
    dls, epochs = data(bs), n_epochs(epochs)
    metrics = MetricsCB(accuracy=Accuracy(), quiet=True)
    sched = OneCycleCB(lr, cycle_momentum=False)   # a CUDA graph replays the step: only the lr may change
    learn = Learner(flagship_model(), dls, nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), lr=lr,
                    opt_func=lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=FLAGSHIP['wd']),
                    cbs=[DeviceCB(DEV), *fast_cbs(graphs=graphs), aug_cb(RandFlip()), metrics, sched])
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

def epoch_time(deterministic, bs, lr, graphs=True, epochs=2):
    "Seconds of the last of `epochs` flagship epochs on the fast path (the first pays for warm-up and the capture)."
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            curve, step = minimal_loop(bs, lr, epochs, graphs=graphs, deterministic=deterministic)
        nondet = sorted({str(x.message).split(' does not have')[0][:80] for x in w
                         if 'deterministic implementation' in str(x.message)})
        return curve[-1][0] - (curve[-2][0] if len(curve) > 1 else 0), step, nondet   # one epoch under --smoke
    finally: set_deterministic(False)

def determinism_cost(bs, lr):
    "One line: an epoch with deterministic algorithms / an epoch without, on the fast path (graphs where they work)."
    for graphs in (True, False):
        try:
            t_off, _, _ = epoch_time(False, bs, lr, graphs)
            t_on, step, nondet = epoch_time(True, bs, lr, graphs)
        except Exception as e:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if graphs: print(f"(deterministic with CUDA graphs failed: {why}; measuring without graphs)", flush=True); continue
            print(f"deterministic: FAILED {why}", flush=True); return
        print(f"deterministic mode: epoch {t_on:.3f}s vs {t_off:.3f}s = {t_on/t_off:.2f}x (flagship, bs {bs}, "
              f"{'CUDA graph' if graphs and step is not None and step.graph is not None else 'eager'}; "
              f"use_deterministic_algorithms + cudnn.deterministic, benchmark off); ops without a deterministic "
              f"kernel: {nondet or 'none'}", flush=True)
        return

def compiled(bs, lr, epochs=4):
    "The minimal loop with torch.compile(mode='reduce-overhead') (its own CUDA graphs) in place of GraphedStep's."
    t = time.perf_counter()
    curve, _ = minimal_loop(bs, lr, epochs, graphs=False, compile_mode='reduce-overhead')
    report(f"compile reduce-overhead, bs {bs}, {epochs} ep (epoch 1 incl. compile)", curve, None)
    print(f"  (torch.compile run {time.perf_counter() - t:.1f}s in all)", flush=True)

def precision_steps(bs):
    xb = torch.randn(bs, 1, 28, 28, device=DEV); yb = torch.randint(0, 10, (bs,), device=DEV)
    n = 2 if SMOKE else 10
    for dt in (torch.bfloat16, torch.float16, torch.bfloat16, torch.float16):
        t = time_train_step(flagship_model(), xb, yb, amp=True, channels_last=True, n=n, dtype=dt)
        print(f"eager step, {str(dt)[6:]} autocast + channels-last, bs {bs}: {t*1000:.2f} ms", flush=True)
    t = time_train_step(flagship_model(), xb, yb, amp=False, channels_last=False, n=n)
    print(f"eager step, fp32 NCHW, bs {bs}: {t*1000:.2f} ms", flush=True)

def run_curve(name, fn, **kw):
    curve, step = fn(**kw); report(name, curve, step)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--budget', type=float, default=150)
    p.add_argument('--no-compile', action='store_true', help="skip torch.compile(mode='reduce-overhead')")
    p.add_argument('--smoke', action='store_true', help="check this script: every measurement on 2,048 images, one "
                   "epoch, on any device, no compile (the numbers mean nothing)")
    args = p.parse_args()
    global DEV, SMOKE
    if args.smoke:
        DEV, SMOKE = ('cuda' if torch.cuda.is_available() else 'cpu'), dict(n_train=2048, n_valid=512, max_epochs=1)
        args.no_compile, args.budget = True, float('inf')
        print(f"fast_path --smoke on {DEV}: each measurement's code on 2,048 images; the numbers mean nothing", flush=True)
    elif not torch.cuda.is_available():
        print("fast_path: no CUDA GPU on this machine: nothing measured (the fast path is for CUDA GPUs)."); return 0
    else: print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda} | FAST_GPU {FAST_GPU}"
                f" | budget {args.budget:.0f}s", flush=True)
    bs, lr = FAST_GPU['bs'], FAST_GPU['lr']
    # (name, estimated seconds on an H200, function, kwargs): most important first
    runs = [
        (f'minimal loop, graph, bs {bs}, lr {lr}, 8 ep', 8, run_curve, dict(fn=minimal_loop, bs=bs, lr=lr, epochs=8)),
        (f'Learner+fast_cbs, graph, bs {bs}, 8 ep', 8, run_curve, dict(fn=with_learner, bs=bs, lr=lr, epochs=8)),
        ('deterministic mode', 12, determinism_cost, dict(bs=bs, lr=lr)),
        ('torch.compile reduce-overhead', 30, compiled, dict(bs=bs, lr=lr)),
        (f'minimal loop, eager, bs {bs}, lr {lr}, 8 ep', 8, run_curve, dict(fn=minimal_loop, bs=bs, lr=lr, epochs=8, graphs=False)),
        (f'Learner+fast_cbs, eager, bs {bs}, 8 ep', 8, run_curve, dict(fn=with_learner, bs=bs, lr=lr, epochs=8, graphs=False)),
        ('precision step times', 5, precision_steps, dict(bs=64 if SMOKE else bs)),   # fp16 on a CPU is slow
        ('minimal loop, graph, bs 512, lr 1e-2, 6 ep', 8, run_curve, dict(fn=minimal_loop, bs=512, lr=1e-2, epochs=6)),
        ('minimal loop, graph, bs 2048, lr 3e-2, 10 ep', 8, run_curve, dict(fn=minimal_loop, bs=2048, lr=3e-2, epochs=10)),
        ('minimal loop, graph, bs 1024, lr 3e-2, 8 ep', 8, run_curve, dict(fn=minimal_loop, bs=1024, lr=3e-2, epochs=8)),
        ('minimal loop, graph, fp32 (no autocast), 8 ep', 8, run_curve, dict(fn=minimal_loop, bs=bs, lr=lr, epochs=8, dtype=None)),
        ('minimal loop, graph, seed 1, 8 ep', 8, run_curve, dict(fn=minimal_loop, bs=bs, lr=lr, epochs=8, seed=1)),
    ]
    skipped, failed = [], 0
    for name, est, fn, kw in runs:
        if name.startswith('torch.compile') and args.no_compile: skipped.append(f"{name} (--no-compile)"); continue
        left = args.budget - (time.perf_counter() - T0)
        if est > left: skipped.append(f"{name} (needs ~{est}s, {max(left, 0):.0f}s of the budget left)"); continue
        try: fn(name, **kw) if fn is run_curve else fn(**kw)   # a curve is printed under its row's name
        except Exception as e:
            print(f"{name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", flush=True)
            traceback.print_exc(limit=3); failed += 1
    for sk in skipped: print(f"skipped: {sk}")
    print(f"fast_path: {time.perf_counter() - T0:.0f}s in all, {len(skipped)} measurement(s) skipped, {failed} failed")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
