"""Run-to-run spread of the lesson-17 init experiments (07_init): GeneralRelu(0.1, 0.4) + Kaiming(leak 0.1), inputs
normalised (0.28/0.35), bs 1024, MomentumLearner lr 0.2, 3 epochs, full Fashion-MNIST; one line per seed.

Usage: .venv/bin/python bench/init_seeds.py [seed ...]   (default seeds: 1 2 3). ~1-2 min per seed on an idle 2-core CPU."""
import sys, time
from functools import partial
import torch.nn.functional as F
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import MomentumLearner, DeviceCB, MetricsCB
from miniai.metrics import Accuracy
from miniai.init import get_model, GeneralRelu, init_weights, BatchTransformCB

def _norm(b): return (b[0]-0.28)/0.35, b[1]

def run(seed, epochs=3, lr=0.2):
    set_seed(seed)
    dls = fashion_dls(1024, normalize=False)
    set_seed(seed)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4)).apply(partial(init_weights, leaky=0.1))
    metrics = MetricsCB(accuracy=Accuracy())
    metrics._log = lambda d: None
    learn = MomentumLearner(model, dls, F.cross_entropy, lr=lr, cbs=[DeviceCB(), metrics, BatchTransformCB(_norm)])
    start = time.perf_counter()
    learn.fit(epochs)
    return metrics.last('valid')['accuracy'], time.perf_counter() - start

if __name__ == '__main__':
    seeds = [int(s) for s in sys.argv[1:]] or [1, 2, 3]
    accs = []
    for seed in seeds:
        acc, secs = run(seed)
        accs.append(acc)
        print(f"seed {seed}: GeneralRelu + Kaiming, 3 epochs: valid accuracy {acc:.3f} ({secs:.0f}s)", flush=True)
    print(f"mean {sum(accs)/len(accs):.4f}, min {min(accs):.3f}, max {max(accs):.3f} over {len(accs)} seeds")
