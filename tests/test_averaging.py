"Weight averaging (miniai.averaging): EMA equals torch's AveragedModel, is swapped in only for validation and always"
" swapped back; Lookahead follows its formula; both keep their state in checkpoints; bad arguments are refused."
import pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from miniai.averaging import EMACB, LookaheadCB
from miniai.learner import Learner, TrainCB
from miniai.callbacks import Callback

def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

def _learn(data, model, *cbs):
    "A Learner on `data` (the `linear_batches` fixture: 10 batches of 16, 6 features, 3 classes)."
    return Learner(model, (data, data[:2]), F.cross_entropy, lr=1e-2, cbs=[TrainCB(), *cbs], opt_func=torch.optim.AdamW)

def _state(m): return [t.detach().clone() for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()]

def test_ema_equals_averaged_model(linear_batches):
    data = linear_batches(10, bs=16, n_in=6, n_out=3)
    model = _model()
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    ref.update_parameters(model)
    class Ref(Callback):
        order = EMACB.order + 1
        def after_step(self, learn): ref.update_parameters(learn.model)
    ema = EMACB(0.8, validate=False)
    _learn(data, model, ema, Ref()).fit(2)
    assert ema.n_steps == 20
    for a, r in zip(ema.avg, _state(ref.module)): torch.testing.assert_close(a, r, rtol=0, atol=1e-6)
    # and the average is not simply the last weights
    assert any(not torch.equal(a, m) for a, m in zip(ema.avg, _state(model)))

def test_ema_validation_swaps_back_even_when_interrupted(linear_batches):
    data = linear_batches(10, bs=16, n_in=6, n_out=3)
    model = _model(1)
    class Interrupt(Callback):
        order = EMACB.order + 1
        def after_batch(self, learn):
            if not learn.training:
                self.seen = _state(learn.model)
                raise KeyboardInterrupt
    ema, stop = EMACB(0.5), Interrupt()
    learn = _learn(data, model, ema, stop)
    with pytest.raises(KeyboardInterrupt): learn.fit(1)
    for s, a in zip(stop.seen, ema.avg): assert torch.equal(s, a)          # validation ran on the average
    own = _state(model)
    assert any(not torch.equal(o, a) for o, a in zip(own, ema.avg))          # and the model has its own weights back
    with ema.applied():
        for t, a in zip(_state(model), ema.avg): assert torch.equal(t, a)
    for t, o in zip(_state(model), own): assert torch.equal(t, o)

def test_ema_continues_across_fits_and_round_trips(linear_batches):
    data = linear_batches(10, bs=16, n_in=6, n_out=3)
    model = _model(2)
    ema = EMACB(0.9, validate=False)
    learn = _learn(data, model, ema)
    learn.fit(1)
    first = [a.clone() for a in ema.avg]
    learn.fit(1, train=False)                       # a validation-only fit must not restart the average
    for a, f in zip(ema.avg, first): assert torch.equal(a, f)
    sd = ema.state_dict()
    other = EMACB(0.9)
    other.load_state_dict(sd)
    assert other.n_steps == 10 and all(torch.equal(a, b) for a, b in zip(other.avg, ema.avg))

def test_lookahead_formula():
    # minimise (w-3)^2/2 with SGD lr 0.1: fast step w <- w - 0.1 (w - 3); every k=3 steps slow += 0.5 (w - slow), w = slow
    class Scalar(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(()))
        def forward(self, x): return self.w.expand(len(x))
    w = slow = 0.
    for i in range(1, 8):
        w -= 0.1 * (w - 3)
        if i % 3 == 0: slow += 0.5 * (w - slow); w = slow
    batches = [(torch.zeros(1), torch.full((1,), 3.))] * 7
    la = LookaheadCB(k=3, alpha=0.5)
    learn = Learner(Scalar(), (batches, batches[:1]), lambda p, y: ((p - y) ** 2 / 2).mean(), lr=0.1,
                    cbs=[TrainCB(), la], opt_func=torch.optim.SGD)
    learn.fit(1)
    assert abs(learn.model.w.item() - w) < 1e-6
    assert la.n_steps == 7 and abs(la.slow[0].item() - slow) < 1e-6

@pytest.mark.parametrize('make, msg', [
    (lambda: EMACB(1.0), 'decay must be in [0, 1)'), (lambda: EMACB(-0.5), 'decay must be in [0, 1)'),
    (lambda: LookaheadCB(k=0), 'k must be an int >= 1'), (lambda: LookaheadCB(k=2.5), 'k must be an int >= 1'),
    (lambda: LookaheadCB(alpha=0.), 'alpha must be in (0, 1]'), (lambda: LookaheadCB(alpha=1.5), 'alpha must be in (0, 1]')])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        make()

def test_applied_before_any_fit_is_a_clear_error():
    with pytest.raises(RuntimeError, match='no average yet'):
        with EMACB().applied(nn.Linear(2, 2)): pass
