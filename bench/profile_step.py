"""Profile the Learner's training step on the flagship recipe: where do the milliseconds of a batch go?
Prints torch.profiler's top operators by self CPU time and the share of wall time spent outside torch operators
(callbacks, data loading, Python glue), measured over `--batches` training batches after a warm-up.

    python bench/profile_step.py [--batches 40]
"""
import argparse, contextlib, io, time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from miniai.augment import FLAGSHIP, aug_cb, flagship_model, flagship_tfms
from miniai.callbacks import Callback, CancelFitException
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB, ProgressCB, TrainCB
from miniai.metrics import Accuracy


class StopAfter(Callback):
    order = 100
    def __init__(self, n): self.n = n
    def after_batch(self, learn):
        if learn.training and learn.iter + 1 >= self.n: raise CancelFitException()


def learner(n_batches):
    set_seed(0)
    return Learner(flagship_model(), fashion_dls(FLAGSHIP['bs']),
                   nn.CrossEntropyLoss(label_smoothing=FLAGSHIP['label_smoothing']), lr=1e-3,
                   opt_func=torch.optim.AdamW,
                   cbs=[TrainCB(), DeviceCB(), aug_cb(*flagship_tfms()), MetricsCB(accuracy=Accuracy()), ProgressCB(),
                        StopAfter(n_batches)])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batches', type=int, default=40)
    args = p.parse_args()
    with contextlib.redirect_stdout(io.StringIO()): learner(5).fit(1)       # warm-up
    learn = learner(args.batches)
    with profile(activities=[ProfilerActivity.CPU]) as prof, contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter(); learn.fit(1); wall = time.perf_counter() - t
    events = prof.key_averages()
    print(events.table(sort_by='self_cpu_time_total', row_limit=15))
    # top-level operator time: sum of self times of all ops (self times don't double count nested ops)
    op_s = sum(e.self_cpu_time_total for e in events)/1e6
    print(f"{args.batches} training batches: {wall:.2f}s wall, {1e3*wall/args.batches:.1f} ms per batch; "
          f"torch operators {op_s:.2f}s ({100*op_s/wall:.0f}% of wall); everything else "
          f"(callbacks, Python glue, profiler) {wall - op_s:.2f}s")


if __name__ == '__main__':
    main()
