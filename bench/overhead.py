"""Learner overhead: the same model, data, optimizer and number of steps, trained by a hand-written PyTorch loop and
by `Learner` with the usual callbacks (TrainCB, DeviceCB, MetricsCB, ProgressCB), interleaved in one run.
Prints the median wall-time ratio Learner / hand-written (target <= 1.03 on the CPU, <= 1.05 on CUDA). On CUDA both
read their batches from the library's device-resident loaders (`miniai.fastpath.fast_dls`), so what is compared is the
loop, not the host-to-GPU copies; both time a whole epoch until the GPU has finished it.

    python bench/overhead.py [--reps 5] [--n-train 60000]
"""
import argparse, statistics, time

import torch
import torch.nn.functional as F

from miniai.fastpath import fast_dls, on_gpu
from miniai.conv import def_device, simple_cnn, to_device
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB, ProgressCB, TrainCB
from miniai.metrics import Accuracy


def hand_loop(model, dls, lr, device):
    "What a person would write without a library: train one epoch, then evaluate loss and accuracy."
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for xb, yb in dls.train:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    total, correct, n = 0., 0, 0           # summed where the batches are, read once at the end (no wait per batch)
    with torch.no_grad():
        for xb, yb in dls.valid:
            xb, yb = xb.to(device), yb.to(device)
            preds = model(xb)
            total += F.cross_entropy(preds, yb, reduction='sum')
            correct += (preds.argmax(1) == yb).sum(); n += len(yb)
    return float(correct)/n


def learner_loop(model, dls, lr, device):
    metrics = MetricsCB(accuracy=Accuracy())
    learn = Learner(model, dls, F.cross_entropy, lr=lr, opt_func=torch.optim.SGD,
                    cbs=[TrainCB(), DeviceCB(device), metrics, ProgressCB()])
    learn.fit(1)
    return metrics.last('valid')['accuracy']


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--n-train', type=int, default=60000)
    args = p.parse_args()
    dls = fast_dls(256, def_device, n_train=args.n_train, drop_last=False) if on_gpu() else fashion_dls(bs=256, n_train=args.n_train)
    times = {'hand': [], 'learner': []}
    import io, contextlib
    for rep in range(args.reps + 1):          # rep 0 warms up both paths and is not counted
        for name, fn in (('hand', hand_loop), ('learner', learner_loop)) if rep % 2 else (('learner', learner_loop), ('hand', hand_loop)):
            set_seed(rep)
            model = simple_cnn(norm=True)
            if on_gpu(): torch.cuda.synchronize()
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()): acc = fn(model, dls, 0.4, def_device)
            if on_gpu(): torch.cuda.synchronize()
            dt = time.perf_counter() - t
            if rep: times[name].append(dt)
            print(f"rep {rep} {name:8s} {dt:6.2f}s  acc {acc:.3f}{'  (warm-up)' if rep == 0 else ''}")
    ratios = [l/h for l, h in zip(times['learner'], times['hand'])]
    med_h, med_l = statistics.median(times['hand']), statistics.median(times['learner'])
    print(f"\nhand-written loop: median {med_h:.2f}s; Learner + callbacks: median {med_l:.2f}s "
          f"({args.n_train} train items, {def_device}, {torch.get_num_threads()} threads)")
    target = 1.05 if on_gpu() else 1.03
    print(f"overhead ratio (median of paired ratios): {statistics.median(ratios):.3f}  (target <= {target})")


if __name__ == '__main__':
    main()
