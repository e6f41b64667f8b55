"""Training-step speed of fp32 vs bf16 autocast, NCHW vs channels-last, measured side by side in one run.

    python bench/amp.py [--bs 256] [--reps 3]

It measures the device that trains: the GPU when there is one (where it also times fp16 against bf16), else the CPU.
For each model: `miniai.accel.precision_speeds`, the best of `reps` interleaved rounds of `time_train_step` (itself
the best of 5 steps) in each of the four combinations, and the speed-up of bf16 + channels-last over plain fp32. On a
CPU without native bf16 (no AVX512-bf16/AMX) bf16 is emulated and slower: the script says which case this machine is.
"""
import argparse
import torch
from miniai.accel import precision_speeds, time_train_step, PRECISION_MODES, bf16_fast_on_cpu
from miniai.conv import def_device
from miniai.datasets import fashion_dls
from miniai.resnet import resnet

MODELS = {
    'flagship 8→128 (6 MFLOPs)': lambda: resnet((8, 16, 32, 64, 128), ks0=5, stem='conv'),
    'course 16→512, block stem (37 MFLOPs)': lambda: resnet((16, 32, 64, 128, 256, 512), ks0=5, stem='block'),
    'wide 32→256 (69 MFLOPs)': lambda: resnet((32, 64, 128, 256), ks0=5, stem='conv'),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--reps', type=int, default=3)
    args = p.parse_args()
    dev = torch.device(def_device)
    if dev.type == 'cuda': print(f"torch {torch.__version__}, {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else: print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 on this CPU: {bf16_fast_on_cpu()}")
    xb, yb = (t.to(dev) for t in next(iter(fashion_dls(args.bs, n_train=args.bs, n_valid=64).train)))
    print("| model | fp32 | fp32 + channels-last | bf16 | bf16 + channels-last | speed-up |\n|--|--|--|--|--|--|")
    for name, make in MODELS.items():
        best = precision_speeds(make, xb, yb, reps=args.reps)
        cells = ' | '.join(f"{best[m] * 1000:.0f} ms" for m in PRECISION_MODES)
        print(f"| {name} | {cells} | {best[False, False] / best[True, True]:.2f}× |", flush=True)
    if dev.type == 'cuda':   # fp16 needs a GradScaler (not timed here); is it faster than bf16 on this GPU?
        for name, make in MODELS.items():
            t = {dt: min(time_train_step(make(), xb, yb, amp=True, channels_last=True, n=10, dtype=dt) for _ in range(args.reps))
                 for dt in (torch.bfloat16, torch.float16)}
            print(f"{name}: fp16 + channels-last {t[torch.float16]*1000:.2f} ms, bf16 + channels-last "
                  f"{t[torch.bfloat16]*1000:.2f} ms per step (bs {args.bs})", flush=True)


if __name__ == '__main__': main()
