"""A folder of your own pictures as training data (`miniai train --images`): what the conversion costs, and whether
reading the pictures is the bottleneck of an epoch once they are cached.

Writes a folder of about 2,000 PNGs of 3 Fashion-MNIST classes (`write_fashion_folder`: half greyscale, half tinted
colour crops, mixed sizes and modes), then prints:
1. the first conversion (headers, decoding, resizing to 64×64 RGB, the cache written) and a second run's read of the cache;
2. one epoch of batches from the cache (the data alone);
3. one training epoch of the default recipe's model (the flagship ResNet, 'auto' precision, flips, batch 64 as
   `miniai train` picks for this folder) on the cached pictures, against the same number of Fashion-MNIST pictures
   at the same size (resized to 64×64, three channels) from memory: interleaved, median of `--reps`.

    python bench/images.py [--n-per-class 667] [--reps 3] [--threads N]
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ['MINIAI_CACHE'] = tempfile.mkdtemp(prefix='miniai-bench-cache-')   # a cold cache: the first run converts

import torch
import torch.nn.functional as F
from torch import nn


def fashion_like(data):
    "As many Fashion-MNIST training pictures as `data` has, at its size and channels, as `ImageData` (uint8, from memory)."
    from miniai.datasets import fashion_mnist_arrays
    from miniai.images import ImageData, channel_stats, Preprocess
    x, y = fashion_mnist_arrays()['train']
    nt, nv, (c, s, _) = len(data.x_train), len(data.x_valid), data.x_train.shape[1:]
    big = F.interpolate(torch.from_numpy(x[:nt + nv]).unsqueeze(1).float(), size=(s, s), mode='bilinear')
    big = big.round().clamp(0, 255).to(torch.uint8).expand(-1, c, -1, -1).contiguous()
    yy = torch.from_numpy(y[:nt + nv]) % len(data.classes)
    mean, std = channel_stats(big[:nt])
    return ImageData(big[:nt], yy[:nt], big[nt:], yy[nt:], data.classes, Preprocess('RGB', s, mean, std))


def epoch_seconds(data, bs, recipe, precision):
    "Wall time of one training epoch (no validation) of `recipe`'s model on `data`, as `miniai train` sets it up."
    from miniai.learner import Learner, DeviceCB, Callback
    from miniai.accel import precision_cbs, matmul_small_convs
    from miniai.augment import aug_cb
    from miniai.sched import OneCycleCB
    class Timer(Callback):
        def before_epoch(self, learn): self.t0 = time.perf_counter()
        def after_epoch(self, learn):
            if learn.training: self.secs = time.perf_counter() - self.t0
    model = matmul_small_convs(recipe.make_model(n_in=data.n_in, n_out=len(data.classes)))
    timer = Timer()
    cbs = [*precision_cbs(precision), DeviceCB('cpu'), aug_cb(*recipe.make_tfms()), OneCycleCB(recipe.lr), timer]
    learn = Learner(model, data.dls(bs), nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), lr=recipe.lr,
                    opt_func=torch.optim.AdamW, cbs=cbs)
    learn.fit(1, valid=False)
    return timer.secs


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n-per-class', type=int, default=667)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    from miniai.images import write_fashion_folder, image_folder_data
    from miniai.recipes import RECIPES
    from miniai.accel import resolve_precision
    from miniai.train import _folder_bs, parse_args

    folder = write_fashion_folder(Path(tempfile.mkdtemp())/'clothes', n_per_class=args.n_per_class)
    n_files = sum(1 for f in folder.rglob('*') if f.is_file())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; folder: {n_files} files, 3 classes")
    first = image_folder_data(folder, progress=False)
    second = image_folder_data(folder, progress=False)
    assert not first.info['from_cache'] and second.info['from_cache'] and torch.equal(first.x_train, second.x_train)
    print(f"conversion (first run): {first.info['read_seconds']:.2f} s for {n_files} pictures "
          f"({1000*first.info['read_seconds']/n_files:.2f} ms each) -> {tuple(first.x_train.shape[1:])} uint8")
    print(f"from the cache (second run): {second.info['read_seconds']:.3f} s "
          f"({first.info['read_seconds']/second.info['read_seconds']:.0f}x faster)")

    bs = _folder_bs(parse_args([]), 256, len(second.x_train), 4, 1)
    t0 = time.perf_counter(); dls = second.dls(bs); setup = time.perf_counter() - t0   # normalised once, in memory
    t0 = time.perf_counter(); n = sum(len(xb) for xb, _ in dls.train); data_only = time.perf_counter() - t0
    print(f"the data alone: normalising the cached pictures once {1000*setup:.0f} ms, then one epoch of batches "
          f"{1000*data_only:.1f} ms for {n} pictures")

    recipe = RECIPES['resnet']
    precision = resolve_precision(recipe.precision, 'cpu')
    fashion = fashion_like(second)
    times = {'cache': [], 'fashion': []}
    for _ in range(args.reps):   # interleaved, so a change in the machine's load hits both alike
        times['cache'].append(epoch_seconds(second, bs, recipe, precision))
        times['fashion'].append(epoch_seconds(fashion, bs, recipe, precision))
    a, b = statistics.median(times['cache']), statistics.median(times['fashion'])
    print(f"training epoch ({recipe.name}, {precision}, bs {bs}, {len(second.x_train)} pictures at "
          f"{'x'.join(map(str, second.x_train.shape[1:]))}), median of {args.reps}: from the cache {a:.2f} s, "
          f"Fashion-MNIST at the same size from memory {b:.2f} s: ratio {a/b:.3f}")


if __name__ == '__main__': main()
