"Mixed precision (miniai.accel): bf16 autocast on CPU trains, non-finite steps are skipped, autocast always left."
import math, pytest, torch
import torch.nn.functional as F
from torch import nn
from miniai.accel import MixedPrecision
from miniai.learner import Learner, TrainCB, DeviceCB
from miniai.callbacks import Callback, CancelFitException

def _data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 4, generator=g)
    xs = [torch.randn(32, 20, generator=g) for _ in range(n)]
    return [(x, (x @ w).argmax(1)) for x in xs]

def _learn(cb, *cbs, lr=0.5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    data = _data()
    return Learner(model, (data, data[:2]), F.cross_entropy, lr=lr, cbs=[DeviceCB('cpu'), cb, *cbs])

class LossCB(Callback):
    def before_fit(self, learn): self.losses = []
    def after_loss(self, learn):
        if learn.training: self.losses.append(learn.loss.item())

def test_bf16_trains_like_fp32():
    l32, l16 = LossCB(), LossCB()
    _learn(TrainCB(), l32).fit(5, valid=False)
    mp = MixedPrecision()
    _learn(mp, l16).fit(5, valid=False)
    assert mp.amp_dtype == torch.bfloat16 and mp.scaler is None and mp.n_skipped == 0
    assert l16.losses[-1] < 0.5 * l16.losses[0]
    assert abs(l16.losses[-1] - l32.losses[-1]) < 0.1

def test_autocast_active_in_forward_only():
    class Check(Callback):
        order = MixedPrecision.order + 1
        def after_predict(self, learn): self.pred_dtype = learn.preds.dtype; self.in_fwd = torch.is_autocast_enabled('cpu')
        def after_step(self, learn): self.in_step = torch.is_autocast_enabled('cpu')
    c = Check()
    _learn(MixedPrecision(), c).fit(1, valid=False)
    assert c.pred_dtype == torch.bfloat16 and c.in_fwd and not c.in_step
    assert not torch.is_autocast_enabled('cpu')

def test_nonfinite_step_skipped():
    class Poison(Callback):
        order = MixedPrecision.order + 1
        def after_backward(self, learn):
            if learn.iter == 3: next(learn.model.parameters()).grad[0, 0] = float('nan')
            self.before = [p.detach().clone() for p in learn.model.parameters()]
        def after_step(self, learn):
            if learn.iter == 3: self.unchanged = all(torch.equal(a, p) for a, p in zip(self.before, learn.model.parameters()))
            elif learn.iter == 4: self.changed = not all(torch.equal(a, p) for a, p in zip(self.before, learn.model.parameters()))
    p, mp = Poison(), MixedPrecision()
    learn = _learn(mp, p)
    learn.fit(1, valid=False)
    assert p.unchanged and p.changed and mp.n_skipped == 1
    assert all(torch.isfinite(q).all() for q in learn.model.parameters())

def test_autocast_left_after_cancel():
    class Stop(Callback):
        order = MixedPrecision.order + 1
        def after_predict(self, learn): raise CancelFitException()
    mp = MixedPrecision()
    _learn(mp, Stop()).fit(1)
    assert mp.autocast is None and not torch.is_autocast_enabled('cpu')
