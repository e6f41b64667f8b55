"""Training-step speed of fp32 vs bf16 autocast, NCHW vs channels-last, measured side by side in one run.

    python bench/amp.py [--bs 256] [--reps 3]

For each model: the best of `reps` interleaved rounds of `miniai.accel.time_train_step` (itself the best of 5 steps)
in each of the four combinations, and the speed-up of bf16 + channels-last over plain fp32. On a CPU without native
bf16 (no AVX512-bf16/AMX) bf16 is emulated and slower: the script says which case this machine is.
"""
import argparse
import torch
from miniai.accel import time_train_step, bf16_fast_on_cpu
from miniai.datasets import fashion_dls, set_seed
from miniai.resnet import resnet

MODELS = {
    'flagship 8→128 (6 MFLOPs)': lambda: resnet((8, 16, 32, 64, 128), ks0=5, stem='conv'),
    'wide 32→256 (69 MFLOPs)': lambda: resnet((32, 64, 128, 256), ks0=5, stem='conv'),
}
MODES = [(False, False), (False, True), (True, False), (True, True)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--reps', type=int, default=3)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 on this CPU: {bf16_fast_on_cpu()}")
    xb, yb = next(iter(fashion_dls(args.bs, n_train=args.bs, n_valid=64).train))
    print("| model | fp32 | fp32 + channels-last | bf16 | bf16 + channels-last | speed-up |\n|--|--|--|--|--|--|")
    for name, make in MODELS.items():
        best = {m: float('inf') for m in MODES}
        for _ in range(args.reps):               # interleaved, so a load change hits every mode alike
            for amp, cl in MODES:
                set_seed(0)
                best[amp, cl] = min(best[amp, cl], time_train_step(make(), xb, yb, amp=amp, channels_last=cl))
        cells = ' | '.join(f"{best[m] * 1000:.0f} ms" for m in MODES)
        print(f"| {name} | {cells} | {best[False, False] / best[True, True]:.2f}× |", flush=True)


if __name__ == '__main__': main()
