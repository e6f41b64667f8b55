"No memory growth across epochs with ActivationStats and metrics on (a small model, real data subset)."
import gc

import torch
import torch.nn.functional as F
from torch import nn

from miniai.activations import ActivationStats
from miniai.callbacks import Callback
from miniai.learner import DeviceCB, MetricsCB, MomentumLearner
from miniai.metrics import Accuracy


def rss_bytes():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * 4096


class RSSLog(Callback):
    order = 100
    def __init__(self): self.rss = []
    def after_epoch(self, learn):
        if not learn.training:
            gc.collect()
            self.rss.append(rss_bytes())


def test_rss_flat_from_epoch_2_to_10(fashion_subset, tiny_cnn):
    dls = fashion_subset(bs=64, n_train=1024, n_valid=512)
    log = RSSLog()
    learn = MomentumLearner(tiny_cnn(seed=0), dls, F.cross_entropy, lr=0.1,
                            cbs=[DeviceCB(), MetricsCB(accuracy=Accuracy()),
                                 ActivationStats(lambda m: isinstance(m, nn.Conv2d)), log])
    learn.fit(10)
    r2, r10 = log.rss[1], log.rss[9]
    print(f"RSS after epoch 2: {r2/2**20:.1f} MiB, after epoch 10: {r10/2**20:.1f} MiB")
    assert r10 <= r2 * 1.05, f"RSS grew from {r2/2**20:.1f} MiB to {r10/2**20:.1f} MiB"
