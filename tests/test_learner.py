"Learner mechanics on small synthetic tensors, plus one real-data accuracy check."
import copy, math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miniai.callbacks import (Callback, CancelBatchException, CancelEpochException, CancelFitException, SingleBatchCB,
                              run_cbs)
from miniai.conv import simple_cnn
from miniai.datasets import DataLoaders, fashion_dls, set_seed, tensor_dl
from miniai.learner import (DeviceCB, Learner, LRFinderCB, MetricsCB, MomentumLearner, NonFiniteLossError, ProgressCB,
                            TrainCB, TrainLearner, lr_find)
from miniai.metrics import Accuracy, Mean


def toy_dls(n_train=10, n_valid=7, bs=4):
    g = torch.Generator().manual_seed(0)
    xt, xv = torch.randn(n_train, 3, generator=g), torch.randn(n_valid, 3, generator=g)
    yt, yv = torch.randint(0, 2, (n_train,), generator=g), torch.randint(0, 2, (n_valid,), generator=g)
    return DataLoaders(tensor_dl(xt, yt, bs=bs), tensor_dl(xv, yv, bs=bs))


def toy_learner(cbs=(), **kw):
    torch.manual_seed(0)
    return Learner(nn.Linear(3, 2), toy_dls(**kw), F.cross_entropy, lr=0.1, cbs=[TrainCB(), *cbs])


class Recorder(Callback):
    "Records every event it sees, with epoch/phase/iter where meaningful."
    events = ('before_fit', 'after_fit', 'after_cancel_fit', 'cleanup_fit', 'before_epoch', 'after_epoch',
              'after_cancel_epoch', 'cleanup_epoch', 'before_batch', 'after_batch', 'after_cancel_batch',
              'cleanup_batch', 'after_predict', 'after_loss', 'after_backward', 'after_step')
    def __init__(self): self.log = []
    def __getattribute__(self, name):
        if name in Recorder.events: return lambda learn: self.log.append(name)
        return super().__getattribute__(name)


def test_event_sequence_of_one_batch_fit():
    rec = Recorder()
    learn = toy_learner([rec], n_train=4, n_valid=4)
    learn.fit(1)
    train_batch = ['before_batch', 'after_predict', 'after_loss', 'after_backward', 'after_step', 'after_batch',
                   'cleanup_batch']
    valid_batch = ['before_batch', 'after_predict', 'after_loss', 'after_batch', 'cleanup_batch']
    assert rec.log == (['before_fit', 'before_epoch', *train_batch, 'after_epoch', 'cleanup_epoch',
                        'before_epoch', *valid_batch, 'after_epoch', 'cleanup_epoch', 'after_fit', 'cleanup_fit'])


def test_callbacks_run_in_order_attribute():
    seen = []
    class A(Callback):
        def __init__(self, order): self.order = order
        def before_fit(self, learn): seen.append(self.order)
    run_cbs([A(5), A(-2), A(0), A(1)], 'before_fit')
    assert seen == [-2, 0, 1, 5]


class Cancel(Callback):
    def __init__(self, exc, when): self.exc, self.when = exc, when
    def after_batch(self, learn):
        if self.when(learn): raise self.exc()


def test_cancel_batch_skips_only_that_batch():
    rec = Recorder()
    # cancel in after_predict of training batch 1: its loss/backward/step must not happen
    class CancelAtPredict(Callback):
        def after_predict(self, learn):
            if learn.training and learn.iter == 1: raise CancelBatchException()
    learn = toy_learner([rec, CancelAtPredict()], n_train=12, n_valid=4)
    learn.fit(1, valid=False)
    assert rec.log.count('after_cancel_batch') == 1
    assert rec.log.count('after_step') == 2 and rec.log.count('cleanup_batch') == 3
    assert rec.log[-1] == 'cleanup_fit' and 'after_fit' in rec.log


def test_cancel_epoch_skips_rest_of_phase_but_fit_continues():
    rec = Recorder()
    learn = toy_learner([rec, Cancel(CancelEpochException, lambda l: l.training and l.iter == 0)], n_train=12)
    learn.fit(2)
    assert rec.log.count('after_cancel_epoch') == 2            # each training phase cancelled
    assert rec.log.count('after_step') == 2                     # one step per epoch, then cancelled
    assert rec.log.count('cleanup_epoch') == 4 and 'after_fit' in rec.log


def test_cancel_fit_runs_after_cancel_and_cleanup_but_not_after_fit():
    rec = Recorder()
    learn = toy_learner([rec, SingleBatchCB()])
    learn.fit(3)
    assert rec.log.count('before_batch') == 1
    assert 'after_fit' not in rec.log
    assert rec.log[-2:] == ['after_cancel_fit', 'cleanup_fit']


def test_fit_callbacks_removed_even_when_fit_raises():
    class Boom(Callback):
        def after_batch(self, learn): raise RuntimeError('boom')
    learn = toy_learner()
    before = list(learn.cbs)
    with pytest.raises(RuntimeError, match='boom'):
        learn.fit(1, cbs=[Boom(), MetricsCB()])
    assert learn.cbs == before
    learn.fit(1)  # still usable


def test_keyboard_interrupt_leaves_learner_usable():
    class CtrlC(Callback):
        def after_batch(self, learn): raise KeyboardInterrupt
    learn = toy_learner([MetricsCB(), ProgressCB()])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(2, cbs=CtrlC())
    assert not any(isinstance(c, CtrlC) for c in learn.cbs)
    assert learn.metrics.logger == MetricsCB.print_row    # ProgressCB put MetricsCB's logger back
    learn.fit(1)
    assert learn.model(torch.zeros(1, 3)).shape == (1, 2)


def test_callback_attribute_access_and_typo_message():
    class Peek(Callback):
        def before_fit(self, learn):
            self.seen = (self.learn is learn, self.model is learn.model, self.opt is learn.opt, self.n_epochs)
    p = Peek()
    toy_learner([p]).fit(2)
    assert p.seen == (True, True, True, 2)
    class Typo(Callback):
        def before_fit(self, learn): return self.modle
    with pytest.raises(AttributeError, match="'Typo' object has no attribute 'modle'"):
        toy_learner([Typo()]).fit(1)
    with pytest.raises(AttributeError, match='is not set'):
        Peek().model


def test_setting_a_forwarded_attribute_warns():
    class Bad(Callback):
        def before_batch(self, learn): self.batch = None
    with pytest.warns(UserWarning, match='learn.batch'):
        toy_learner([Bad()]).fit(1, valid=False)


def test_metrics_weighted_by_batch_size_exactly():
    "Constant-prediction model: the per-item loss and accuracy are known exactly, last batch partial."
    class Const(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(()))
        def forward(self, x): return torch.stack([x[:, 0]*0 + self.w*0, x[:, 0]*0 + 1.0], 1)  # always class 1
    x = torch.zeros(10, 1)
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])   # batches of 4: acc 1.0, 0.0, 0.5
    dls = DataLoaders(tensor_dl(x, y, bs=4), tensor_dl(x, y, bs=4))
    m = MetricsCB(accuracy=Accuracy())
    Learner(Const(), dls, F.cross_entropy, lr=0., cbs=[TrainCB(), m]).fit(1)
    row = m.last('valid')
    assert row['accuracy'] == pytest.approx(5/10)          # unweighted mean of batch accuracies would be 0.5 too...
    logits = torch.tensor([0., 1.])
    want = F.cross_entropy(logits.expand(10, 2), y).item()
    assert row['loss'] == pytest.approx(want, rel=1e-6)
    # ...so check the loss weighting on a case where the unweighted batch mean differs
    y2 = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])   # batch losses: low, low, high (partial batch of 2)
    dls2 = DataLoaders(tensor_dl(x, y2, bs=4), tensor_dl(x, y2, bs=4))
    m2 = MetricsCB(accuracy=Accuracy())
    Learner(Const(), dls2, F.cross_entropy, lr=0., cbs=[TrainCB(), m2]).fit(1)
    want2 = F.cross_entropy(logits.expand(10, 2), y2).item()
    per_batch = [F.cross_entropy(logits.expand(len(c), 2), c).item() for c in y2.split(4)]
    assert m2.last('valid')['loss'] == pytest.approx(want2, rel=1e-6)
    assert abs(sum(per_batch)/3 - want2) > 0.1            # the naive mean would be visibly wrong
    assert m2.last('valid')['accuracy'] == pytest.approx(0.8)


def test_quiet_metrics_keep_history_and_print_nothing(capsys):
    loud, quiet = MetricsCB(accuracy=Accuracy()), MetricsCB(accuracy=Accuracy(), quiet=True)
    toy_learner([loud]).fit(2)
    assert 'accuracy' in capsys.readouterr().out
    toy_learner([quiet, ProgressCB()]).fit(2)          # also when ProgressCB takes over the printing
    assert 'accuracy' not in capsys.readouterr().out
    strip = lambda h: [{k: v for k, v in r.items() if k != 'time'} for r in h]
    assert strip(quiet.history) == strip(loud.history) and len(quiet.history) == 4


def test_metrics_accept_torcheval_objects():
    torcheval = pytest.importorskip('torcheval.metrics')
    m = MetricsCB(torcheval.MulticlassAccuracy(), mine=Accuracy())
    toy_learner([m]).fit(1)
    row = m.last('valid')
    assert row['MulticlassAccuracy'] == pytest.approx(row['mine'])


def test_mean_metric():
    m = Mean()
    m.update(torch.tensor(2.), weight=3); m.update(torch.tensor(4.), weight=1)
    assert m.compute().item() == pytest.approx(2.5)
    assert math.isnan(Mean().compute().item())


def test_bad_arguments_fail_before_training():
    learn = toy_learner()
    w = learn.model.weight.clone()
    for kwargs, msg in [(dict(n_epochs=-1), 'n_epochs must be'), (dict(n_epochs=1.5), 'n_epochs must be'),
                        (dict(lr=-1e-3), 'lr must be >= 0')]:
        n = kwargs.pop('n_epochs', 1)
        with pytest.raises(ValueError, match=msg):
            learn.fit(n, **kwargs)
    assert torch.equal(w, learn.model.weight)
    empty = DataLoaders(tensor_dl(torch.zeros(3, 3), torch.zeros(3).long(), bs=4, drop_last=True),
                        tensor_dl(torch.zeros(3, 3), torch.zeros(3).long(), bs=4))
    with pytest.raises(ValueError, match='training DataLoader is empty'):
        Learner(nn.Linear(3, 2), empty, F.cross_entropy, cbs=[TrainCB()]).fit(1)
    with pytest.raises(ValueError, match='No learning rate'):
        MomentumLearner(nn.Linear(3, 2), toy_dls(), F.cross_entropy).fit(1)


def test_shape_mismatch_names_both_shapes():
    learn = Learner(nn.Linear(3, 5), toy_dls(), F.mse_loss, cbs=[TrainCB()])
    with pytest.raises(ValueError, match=r'\(4, 5\).*\(4,\)'), pytest.warns(UserWarning, match='target size'):
        learn.fit(1)                                   # torch warns about broadcasting first, then fails
    learn = TrainLearner(nn.Linear(3, 2), toy_dls(), lambda p, t: F.cross_entropy(p, t.float()[:, None]), lr=0.1)
    with pytest.raises(ValueError, match=r'model output of shape \(4, 2\)'):
        learn.fit(1)


def test_train_learner_equals_traincb():
    a = toy_learner()
    torch.manual_seed(0)
    b = TrainLearner(nn.Linear(3, 2), toy_dls(), F.cross_entropy, lr=0.1)
    a.fit(2); b.fit(2)
    assert torch.allclose(a.model.weight, b.model.weight)


def test_momentum_learner_matches_torch_sgd_momentum():
    torch.manual_seed(0)
    m1 = nn.Linear(3, 2); m2 = copy.deepcopy(m1)
    MomentumLearner(m1, toy_dls(), F.cross_entropy, lr=0.1, mom=0.9).fit(2, valid=False)
    opt = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for xb, yb in toy_dls().train:
            F.cross_entropy(m2(xb), yb).backward(); opt.step(); opt.zero_grad()
    assert torch.allclose(m1.weight, m2.weight, atol=1e-6)


def test_lr_find_restores_weights_and_suggests():
    set_seed(0)
    learn = MomentumLearner(nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)),
                            toy_dls(n_train=400, bs=8), F.cross_entropy)
    before = copy.deepcopy(learn.model.state_dict())
    lr = learn.lr_find(gamma=1.3, plot=False)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    cb = learn.lr_finder
    assert len(cb.lrs) == len(cb.losses) > 3
    assert cb.lrs[1] == pytest.approx(cb.lrs[0]*1.3)
    assert cb.lrs[0] == pytest.approx(1e-5)
    assert lr == pytest.approx(cb.lrs[cb.losses.index(min(cb.losses))]/10)


def test_lr_find_on_real_data_suggests_an_lr_that_trains(fashion_subset, tiny_cnn):
    "On Fashion-MNIST the suggestion is a usual SGD learning rate, and one epoch at it beats one at 100x less."
    dls = fashion_subset(bs=64, n_train=1280, n_valid=512)
    learn = MomentumLearner(tiny_cnn(), dls, F.cross_entropy, cbs=[MetricsCB(quiet=True)])
    before = copy.deepcopy(learn.model.state_dict())
    lr = lr_find(learn, gamma=1.2, plot=False)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())   # weights and BN stats back
    assert 1e-3 <= lr <= 1, lr
    losses = {}
    for name, l in [('suggested', lr), ('too small', lr/100)]:
        learn.model.load_state_dict(before)
        learn.fit(1, lr=l)
        losses[name] = learn.metrics.last('valid')['loss']
    assert losses['suggested'] < losses['too small'] - 0.2, losses


def test_lr_find_restores_weights_even_on_error():
    class Boom(Callback):
        order = 10
        def after_batch(self, learn):
            if learn.iter == 2: raise RuntimeError('boom')
    learn = toy_learner([Boom()])
    before = copy.deepcopy(learn.model.state_dict())
    with pytest.raises(RuntimeError):
        learn.lr_find(plot=False, max_mult=1e9)   # never stop on loss: the error must stop it
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_device_cb_moves_model_and_batches():
    "DeviceCB('meta') moves to a device the data is not on: the callbacks after it see meta tensors, the model too."
    seen = []
    class Where(Callback):
        order = DeviceCB.order + 1
        def before_batch(self, learn): seen.append((learn.batch[0].device.type, learn.batch[1].device.type))
        def after_predict(self, learn): seen.append(learn.preds.device.type)
    learn = toy_learner([DeviceCB('meta'), Where()])
    learn.nan_guard = False   # a meta tensor has no value to check
    assert next(iter(learn.train_dl))[0].device.type == 'cpu'   # the data itself is on the CPU
    learn.fit(1, cbs=SingleBatchCB())
    assert seen == [('meta', 'meta'), 'meta']
    assert {p.device.type for p in learn.model.parameters()} == {'meta'}


def test_device_cb_copies_to_cuda_through_pinned_memory(monkeypatch):
    "DeviceCB's copies: CPU -> CUDA through pinned memory with non_blocking=True (a plain copy waits for the GPU)."
    from miniai.conv import to_device
    calls = []
    class Fake(torch.Tensor):
        def pin_memory(self): calls.append('pin'); return self
        def to(self, *args, **kwargs): calls.append((args, kwargs)); return self
    x = torch.zeros(2).as_subclass(Fake)
    to_device({'x': [x]}, 'cuda', non_blocking=True)
    assert calls == ['pin', (('cuda',), {'non_blocking': True})]
    calls.clear(); to_device((x,), 'cpu', non_blocking=True)
    assert calls == [(('cpu',), {})]
    calls.clear(); to_device([x], 'cuda')          # the default: a plain copy, as the course's `to_device`
    assert calls == [(('cuda',), {})]


@pytest.mark.slow
def test_simple_cnn_with_batchnorm_reaches_086_in_two_epochs():
    "Real data, full training set: the lesson's CNN with BatchNorm, 2 epochs."
    set_seed(42)
    dls = fashion_dls(bs=256)
    metrics = MetricsCB(accuracy=Accuracy())
    learn = MomentumLearner(simple_cnn(norm=True), dls, F.cross_entropy, lr=0.2, mom=0.85, cbs=[DeviceCB(), metrics])
    learn.fit(2)
    acc = metrics.last('valid')['accuracy']
    print(f"simple CNN + BatchNorm, 2 epochs: test accuracy {acc:.4f}")
    assert acc >= 0.86


def test_callbacks_in_any_iterable(fashion_subset):
    "A fastcore `L`, a tuple, a generator, a nested list or one callback: the same events, as the course writes them."
    from fastcore.foundation import L
    def events(make_cbs, fit_cbs):
        rec = Recorder()
        learn = Learner(nn.Linear(3, 2), toy_dls(), F.cross_entropy, lr=0.1, cbs=make_cbs(rec))
        learn.fit(1, cbs=fit_cbs)
        assert not any(isinstance(c, SingleBatchCB) for c in learn.cbs)   # fit's callbacks are removed again
        return rec.log
    want = events(lambda r: [TrainCB(), r], [SingleBatchCB()])
    assert events(lambda r: L([TrainCB()]) + L([r]), [SingleBatchCB()] + L([])) == want
    assert events(lambda r: (TrainCB(), r), (SingleBatchCB(),)) == want
    assert events(lambda r: (cb for cb in [TrainCB(), r]), (cb for cb in [SingleBatchCB()])) == want
    assert events(lambda r: [TrainCB(), [r]], SingleBatchCB()) == want
    with pytest.raises(TypeError, match=r'write TrainCB\(\)'):
        Learner(nn.Linear(3, 2), toy_dls(), cbs=[TrainCB])
    with pytest.raises(TypeError, match='not a callback'):
        toy_learner().fit(1, cbs=['oops'])


def test_metrics_logger_hook_and_progress_restores_it(monkeypatch):
    "MetricsCB shows each row through `logger`; ProgressCB swaps in its table and puts the old one back, even on error."
    import miniai.learner
    rows = []
    m = MetricsCB(accuracy=Accuracy())
    m.logger = lambda d, header=False: rows.append((header, dict(d)))
    toy_learner([m]).fit(2)
    assert [h for h, _ in rows] == [True, False, False, False]
    assert list(rows[0][1]) == ['accuracy', 'loss', 'epoch', 'train'] and rows[1][1]['train'] == 'eval'
    mine = m.logger
    monkeypatch.setattr(miniai.learner, '_live_output', lambda: True)
    class Boom(Callback):
        order = 100
        def after_epoch(self, learn):
            assert learn.metrics.logger != mine   # ProgressCB's own while it runs
            raise RuntimeError('boom')
    learn = toy_learner([m, ProgressCB()])
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1, cbs=Boom())
    assert m.logger is mine and isinstance(learn.epochs, range)


def test_progress_output_in_a_log_file_is_just_the_table(capsys):
    "Not a terminal, not a notebook (e.g. `miniai train > log`): no bar glyphs or carriage returns, only the table."
    learn = toy_learner([MetricsCB(accuracy=Accuracy()), ProgressCB(plot=True)])
    learn.fit(2)
    out = capsys.readouterr().out
    assert not set(out) & set('\r\x1b█▉▊▋▌▍▎▏') and '|' not in out, repr(out[:200])
    lines = out.splitlines()
    assert lines[0].split() == ['accuracy', 'loss', 'epoch', 'train'] and len(lines) == 5
    assert [l.split()[-1] for l in lines[1:]] == ['train', 'eval', 'train', 'eval']


def test_nan_guard_without_per_batch_reads():
    "The guard reads the kept losses every `nan_check_every` batches; with 1 it stops before the bad step."
    class Poison(Callback):
        def after_predict(self, learn):
            if learn.training and learn.iter == 3: learn.preds = learn.preds*float('nan')
    for every, stepped in [(25, True), (1, False)]:
        learn = toy_learner([Poison()], n_train=40)   # 10 batches of 4
        learn.nan_check_every = every
        with pytest.raises(NonFiniteLossError, match=r'epoch 0, batch 3 \(training\)') as e:
            learn.fit(1)
        assert ('the optimizer stepped 7 time(s)' in str(e.value)) == stepped, str(e.value)
        assert ('before the weights were updated' in str(e.value)) != stepped
        assert torch.isfinite(learn.model.weight).all() != stepped
    learn = toy_learner([Poison()], n_train=40)
    learn.nan_guard = False
    learn.fit(1)   # allowed


def test_metrics_gathered_in_chunks_equal_metrics_per_batch():
    "MetricsCB hands the metrics `flush_every` batches at a time: the epoch's numbers are those of per-batch updates."
    import torch.nn.functional as F
    from torch import nn
    from miniai.learner import Learner, TrainCB, MetricsCB
    from miniai.metrics import Accuracy
    torch.manual_seed(0)
    xs, ys = torch.randn(700, 12), torch.randint(0, 3, (700,))
    batches = [(xs[i:i+64], ys[i:i+64]) for i in range(0, 700, 64)]   # ten of 64 and a last one of 60
    def run(flush_every):
        torch.manual_seed(1)
        m = MetricsCB(accuracy=Accuracy(), quiet=True)
        m.flush_every = flush_every
        Learner(nn.Linear(12, 3), (batches, batches[:5]), F.cross_entropy, lr=0.1, cbs=[TrainCB(), m]).fit(2)
        return m.history
    one, chunked = run(1), run(4)
    assert len(one) == len(chunked) == 4
    for a, b in zip(one, chunked):
        assert a['phase'] == b['phase'] and a['accuracy'] == b['accuracy']
        assert abs(a['loss'] - b['loss']) < 1e-6


# ---- evaluation-only fits, trials (the lr finder), callbacks replaced in place, the NaN guard as a callback ----

def test_an_evaluation_only_fit_builds_no_optimizer_and_keeps_the_one_there_is():
    learn = toy_learner([MetricsCB(quiet=True)])
    learn.fit(1, train=False)
    assert learn.opt is None                       # nothing trained, nothing to optimise
    learn.fit(2)
    opt, state = learn.opt, copy.deepcopy(learn.opt.state_dict())
    learn.fit(1, train=False)
    assert learn.opt is opt and learn.opt.state_dict() == state
    assert learn.n_epochs == 2                     # the run's epochs, not the evaluation pass's
    plain = MomentumLearner(nn.Linear(3, 2), toy_dls(), F.cross_entropy)   # no lr: fine when nothing trains
    plain.fit(1, train=False)


def test_lr_find_puts_back_the_optimizer_and_the_momentum_in_the_gradients():
    learn = MomentumLearner(nn.Linear(3, 2), toy_dls(n_train=200), F.cross_entropy, lr=0.1)
    learn.fit(1, valid=False)
    opt, state = learn.opt, copy.deepcopy(learn.opt.state_dict())
    grads = [p.grad.clone() for p in learn.model.parameters()]   # MomentumLearner's momentum lives in the gradients
    learn.lr_find(plot=False)
    assert learn.opt is opt and learn.opt.state_dict() == state
    assert all(torch.equal(p.grad, g) for p, g in zip(learn.model.parameters(), grads))
    assert learn.n_epochs == 1 and not learn.trial


def test_a_callback_replaced_in_place_runs():
    class Count(Callback):
        def __init__(self): self.n = 0
        def after_batch(self, learn): self.n += 1
    old, new = Count(), Count()
    learn = toy_learner([old])
    learn.fit(1)
    i = learn.cbs.index(old)
    learn.cbs[i] = new                              # same length, another callback
    learn.fit(1)
    assert (old.n, new.n) == (5, 5)                 # 3 training + 2 validation batches each fit


def test_the_order_is_read_at_every_event():
    seen = []
    class A(Callback):
        def __init__(self, name, order): self.name, self.order = name, order
        def before_fit(self, learn): seen.append(self.name)
    a, b = A('a', 1), A('b', 2)
    learn = toy_learner([a, b])
    learn.fit(1)
    b.order = 0                                     # changed after being attached
    learn.fit(1)
    assert seen == ['a', 'b', 'b', 'a']


def test_the_nan_guard_is_a_default_callback():
    from miniai.learner import NanGuardCB
    learn = toy_learner()
    guards = [c for c in learn.cbs if isinstance(c, NanGuardCB)]
    assert len(guards) == 1
    mine = NanGuardCB(check_every=1)
    learn = Learner(nn.Linear(3, 2), toy_dls(), F.cross_entropy, lr=0.1, cbs=[TrainCB(), mine])
    assert [c for c in learn.cbs if isinstance(c, NanGuardCB)] == [mine]   # one given replaces the default
    class Poison(Callback):
        def after_predict(self, learn):
            if learn.training and learn.iter == 1: learn.preds = learn.preds*float('nan')
    learn = toy_learner([Poison()], n_train=40)
    learn.remove_cb(next(c for c in learn.cbs if isinstance(c, NanGuardCB)))
    learn.fit(1)                                    # no guard, no error


def test_the_learner_class_fits_on_a_screen():
    import inspect
    assert len(inspect.getsource(Learner).splitlines()) <= 70
