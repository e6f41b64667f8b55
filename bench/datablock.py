"""Time `get_files` (os.scandir) against os.walk, glob and Path.rglob on the 70,000-file Fashion-MNIST PNG tree.

Run: .venv/bin/python bench/datablock.py [n_repeats]   (writes the tree into the miniai cache the first time)
"""
import glob, os, sys, time
from pathlib import Path

from miniai.datablock import get_files, image_extensions, ImageList, to_byte_tensor, to_float_tensor
from miniai.imagefolders import write_fashion_pngs


def walk_files(path, exts):
    "The same search written with os.walk (which itself uses os.scandir)."
    res = []
    for p, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        res += [Path(p)/f for f in sorted(files) if not f.startswith('.') and os.path.splitext(f)[1].lower() in exts]
    return res

def glob_files(path, exts):
    "glob.glob with `**`, as strings turned into Paths."
    return [Path(f) for f in glob.glob(os.path.join(path, '**', '*'), recursive=True)
            if os.path.splitext(f)[1].lower() in exts and os.path.isfile(f)]

def rglob_files(path, exts):
    "The naive pathlib version."
    return [p for p in Path(path).rglob('*') if p.suffix.lower() in exts and p.is_file()]

def best_of(f, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); res = f(); ts.append(time.perf_counter() - t0)
    return min(ts), res

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    t0 = time.perf_counter()
    path = write_fashion_pngs()
    print(f"tree: {path} (ready in {time.perf_counter() - t0:.1f}s)")
    exts = image_extensions
    ref = None
    for name, f in [('get_files (os.scandir)', lambda: get_files(path, exts, recurse=True)),
                    ('os.walk', lambda: walk_files(path, exts)),
                    ('glob.glob(**)', lambda: glob_files(path, exts)),
                    ('Path.rglob', lambda: rglob_files(path, exts))]:
        t, res = best_of(f, n)
        ref = ref or sorted(res)
        assert sorted(res) == ref, f"{name} found a different set of files"
        print(f"{name:24s} {len(res):>7,} files  {t*1000:8.0f} ms  (best of {n})")
    il = ImageList.from_files(path, tfms=[to_byte_tensor, to_float_tensor])
    t0 = time.perf_counter()
    for i in range(0, len(il), len(il)//2000): il[i]
    dt = (time.perf_counter() - t0)/len(range(0, len(il), len(il)//2000))
    print(f"open + decode + to tensor: {dt*1e6:.0f} µs per 28×28 PNG in one process "
          f"(≈{dt*len(il):.0f}s for all {len(il):,} per epoch before workers)")
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
