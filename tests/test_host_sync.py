"No per-batch host synchronisation: count the reads of tensor values back to the host during a short real `fit`."
import warnings

import pytest
import torch
import torch.nn.functional as F

import miniai.learner
from miniai.datasets import DataLoaders
from miniai.fastpath import count_host_reads   # lesson 12b: the counter of values read back to Python
from miniai.learner import DeviceCB, Learner, MetricsCB, NanGuardCB, ProgressCB, TrainCB
from miniai.metrics import Accuracy


def test_the_counter_counts():
    t = torch.tensor([1.5])
    with count_host_reads() as c:
        t.item(); float(t); bool(t); t.tolist(); t.numpy(); t.cpu(); f'{t[0]:.2f}'
    assert c == {'item': 2, '__float__': 1, '__bool__': 1, 'tolist': 1, 'numpy': 1, 'cpu': 1}
    assert 'item' not in vars(torch.Tensor) or torch.Tensor.item is not None   # restored
    with count_host_reads() as c: pass
    assert sum(c.values()) == 0


def materialised(fashion_subset):
    "Real Fashion-MNIST batches, computed before the fit so that only the learner's own reads are counted."
    dls = fashion_subset(bs=16, n_train=3200, n_valid=800)
    return DataLoaders(list(dls.train), list(dls.valid))   # 200 + 50 batches


@pytest.mark.parametrize('live', [False, True], ids=['log-file', 'live-bars'])
def test_fit_reads_in_bulk_every_few_batches(fashion_subset, tiny_mlp, monkeypatch, capsys, live):
    monkeypatch.setattr(miniai.learner, '_live_output', lambda: live)
    dls = materialised(fashion_subset)
    n_batches = len(dls.train) + len(dls.valid)
    metrics = MetricsCB(accuracy=Accuracy())
    learn = Learner(tiny_mlp(), dls, F.cross_entropy, lr=0.1,
                    cbs=[TrainCB(), DeviceCB('cpu'), metrics, ProgressCB(plot=True, refresh=0.)])
    with count_host_reads() as reads: learn.fit(1)
    out = capsys.readouterr().out
    print(f"{'live' if live else 'log'}: {sum(reads.values())} host reads in {n_batches} batches: {dict(reads)}")
    # the worst case (`refresh=0.`: batches so slow that the bars' time limit always passes, as on a busy machine):
    # each reader reads in bulk with its own period, the bars every `ProgressCB.every` batches, the default NaN guard
    # every `check_every`, the metrics every `flush_every`, each once more at a phase's end; never once per batch
    n_phases = 2
    budget = sum(n_batches / every + n_phases for every in (ProgressCB().every, NanGuardCB().check_every,
                                                             MetricsCB.flush_every))
    assert sum(reads.values()) <= budget, (dict(reads), budget)
    # ...and the numbers are still the epoch's exact numbers, as plain floats
    row = metrics.last('valid')
    assert all(type(row[k]) is float for k in ('accuracy', 'loss', 'time'))
    with torch.no_grad():
        xs, ys = torch.cat([b[0] for b in dls.valid]), torch.cat([b[1] for b in dls.valid])
        preds = learn.model(xs)
    assert row['accuracy'] == pytest.approx((preds.argmax(1) == ys).float().mean().item())
    assert row['loss'] == pytest.approx(F.cross_entropy(preds, ys).item(), rel=1e-5)
    assert 'accuracy' in out


def test_live_loss_plot_reads_in_bulk(fashion_subset, tiny_mlp, monkeypatch):
    "The plot's training losses are the per-batch losses, read in bulk (not one by one)."
    monkeypatch.setattr(miniai.learner, '_live_output', lambda: True)
    dls = materialised(fashion_subset)
    class Keep(miniai.learner.Callback):
        def __init__(self): self.losses = []
        def after_batch(self, learn):
            if learn.training: self.losses.append(learn.loss.detach())
    keep, prog = Keep(), ProgressCB(plot=True)
    learn = Learner(tiny_mlp(), dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), MetricsCB(), prog, keep])
    learn.fit(2)
    assert prog.losses == pytest.approx([l.item() for l in keep.losses])
    assert len(prog.val_losses) == 2 and prog.val_losses[-1] == learn.metrics.last('valid')['loss']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU: there, every host read is a sync')
def test_no_synchronising_cuda_call_in_the_batch_loop(fashion_subset, tiny_mlp):
    "On CUDA, torch's own sync detector (`set_sync_debug_mode`) sees at most 0.1 synchronisations per batch."
    dls = materialised(fashion_subset)
    n_batches = len(dls.train) + len(dls.valid)
    learn = Learner(tiny_mlp(), dls, F.cross_entropy, lr=0.1,
                    cbs=[TrainCB(), DeviceCB('cuda'), MetricsCB(accuracy=Accuracy()), ProgressCB(plot=True)])
    learn.fit(1)   # warm up (the model is on the GPU now)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try: learn.fit(1)
        finally: torch.cuda.set_sync_debug_mode('default')
    syncs = [str(w.message) for w in caught if 'synchroniz' in str(w.message).lower()]
    print(f"{len(syncs)} synchronising CUDA calls in {n_batches} batches")
    assert len(syncs) <= 0.1 * n_batches, syncs[:5]
