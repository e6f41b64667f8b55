"""The cost of sorting the callbacks at every event, as `Learner.callback` does (like the course), against a learner
that keeps them sorted in a cache keyed on the identity and order of `learn.cbs`' contents: the same fit of a small MLP
on Fashion-MNIST batches (the smallest per-batch arithmetic of the lessons, so the loop's own cost shows most),
with the usual callbacks, interleaved. Prints the time per batch of each and their ratio, and the cost of one event
(`learn.callback`) each way, timed alone.

    python bench/callback_order.py [--reps 5] [--n-train 6400]
"""
import argparse, contextlib, io, statistics, time, timeit
from operator import attrgetter

import torch
import torch.nn.functional as F
from torch import nn

from miniai.datasets import DataLoaders, fashion_dls, set_seed
from miniai.learner import DeviceCB, Learner, MetricsCB, ProgressCB, TrainCB
from miniai.metrics import Accuracy


class CachedLearner(Learner):
    "A `Learner` that sorts its callbacks only when the contents of `cbs` (or an `order`) changed."
    _key, _sorted = None, ()
    def callback(self, method_nm):
        key = tuple((id(cb), cb.order) for cb in self.cbs)
        if key != self._key: self._key, self._sorted = key, sorted(self.cbs, key=attrgetter('order'))
        for cb in self._sorted:
            method = getattr(cb, method_nm, None)
            if method is not None: method(self)


def fit_time(cls, dls):
    set_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    learn = cls(model, dls, F.cross_entropy, lr=0.1,
                cbs=[TrainCB(), DeviceCB('cpu'), MetricsCB(accuracy=Accuracy()), ProgressCB()])
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter(); learn.fit(1); t = time.perf_counter() - t
    return t/(len(dls.train) + len(dls.valid)), len(learn.cbs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--n-train', type=int, default=6400)
    args = p.parse_args()
    torch.set_num_threads(1)
    dls = fashion_dls(bs=64, n_train=args.n_train, n_valid=args.n_train//4)
    dls = DataLoaders(list(dls.train), list(dls.valid))   # batches made once: only the loop is timed
    times = {Learner: [], CachedLearner: []}
    for rep in range(args.reps + 1):   # rep 0 warms up and is not counted
        for cls in (Learner, CachedLearner) if rep % 2 else (CachedLearner, Learner):
            t, n_cbs = fit_time(cls, dls)
            if rep: times[cls].append(t)
    a, b = statistics.median(times[Learner]), statistics.median(times[CachedLearner])
    events = {}
    for cls in (Learner, CachedLearner):
        learn = cls(nn.Linear(1, 1), dls, cbs=[TrainCB(), DeviceCB('cpu'), MetricsCB(accuracy=Accuracy()), ProgressCB()])
        events[cls] = min(timeit.repeat(lambda: learn.callback('after_predict'), number=5000, repeat=7))/5000
    print(f"{n_cbs} callbacks, {len(dls.train)} training + {len(dls.valid)} validation batches of 64, MLP 784-32-10, "
          f"1 thread, median of {args.reps}:")
    print(f"sorted at every event: {a*1e6:.0f} µs per batch; cached: {b*1e6:.0f} µs per batch; "
          f"difference {(a - b)*1e6:.0f} µs per batch, ratio {a/b:.3f}×")
    ea, eb = events[Learner], events[CachedLearner]
    print(f"one event alone: sorted {ea*1e6:.2f} µs, cached {eb*1e6:.2f} µs; x 12 events of a training batch: "
          f"{12*(ea - eb)*1e6:.0f} µs per batch ({12*(ea - eb)/b:.1%} of a batch here)")


if __name__ == '__main__': main()
