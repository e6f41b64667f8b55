"""Data pipeline throughput: batches/s of the fast in-memory path vs the lessons' per-item HF `datasets` path
(with_transform + collate_dict), same batch size, measured in one run. Target: fast path >= 20x.

    python bench/data.py [--bs 256] [--batches 100]
"""
import argparse, time

import torchvision.transforms.functional as TF

from miniai.datasets import DataLoaders, fashion_dls, inplace, load_fashion_mnist


def batches_per_sec(dl, limit):
    it = iter(dl)
    next(it)                      # the first batch pays for worker/iterator start-up; not counted
    t, n = time.perf_counter(), 0
    for n, _ in enumerate(it, 1):
        if n == limit: break
    return n/(time.perf_counter() - t)


@inplace
def to_tensor(b): b['image'] = [TF.to_tensor(o) for o in b['image']]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--batches', type=int, default=100)
    args = p.parse_args()
    slow_dls = DataLoaders.from_dd(load_fashion_mnist().with_transform(to_tensor), batch_size=args.bs)
    fast_dls = fashion_dls(bs=args.bs)
    n_fast = len(fast_dls.train) - 1
    results = {}
    for rep in range(2):
        results.setdefault('per-item', []).append(batches_per_sec(slow_dls.train, args.batches))
        results.setdefault('fast', []).append(batches_per_sec(fast_dls.train, n_fast))
    slow, fast = max(results['per-item']), max(results['fast'])
    print(f"per-item HF path : {slow:8.1f} batches/s  (bs {args.bs}, best of 2 x {args.batches} batches)")
    print(f"fast tensor path : {fast:8.1f} batches/s  (bs {args.bs}, best of 2 epochs)")
    print(f"speed-up: {fast/slow:.0f}x  (target >= 20x)")


if __name__ == '__main__':
    main()
