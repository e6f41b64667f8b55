"Schedulers (miniai.sched): closed forms, combine_scheds boundaries, OneCycle == OneCycleLR, callbacks and recorder."
import math
from functools import partial
import pytest, torch
import torch.nn.functional as F
from torch.optim import lr_scheduler
from miniai.datasets import DataLoaders
from miniai.learner import Learner, TrainCB
from miniai.sgd import SGD, Momentum, Adam
from miniai.sched import (sched_lin, sched_cos, sched_no, sched_exp, combine_scheds, BatchSchedCB, EpochSchedCB,
                          RecorderCB, HasLearnCB, ParamSched, OneCycle, one_cycle_scheds, fit_one_cycle,
                          get_hyper, set_hyper, get_lr)

@pytest.mark.parametrize('pos', [0., 0.1, 0.25, 0.5, 0.9, 1.])
def test_annealers_closed_forms(pos):
    assert sched_lin(2, 1)(pos) == pytest.approx(2 - pos)
    assert sched_cos(2, 1)(pos) == pytest.approx(1 + (2 - 1)*(1 + math.cos(math.pi*pos))/2)
    assert sched_no(2, 1)(pos) == 2
    assert sched_exp(2, 1e-2)(pos) == pytest.approx(2*(1e-2/2)**pos)

def test_sched_exp_needs_positive():
    with pytest.raises(ValueError, match='start and end > 0'): sched_exp(0, 1)

def test_combine_scheds_boundaries():
    s = combine_scheds([0.3, 0.7], [sched_lin(0, 1), sched_lin(1, 0)])
    assert s(0) == 0 and s(0.3) == pytest.approx(1) and s(1) == pytest.approx(0)
    assert s(0.15) == pytest.approx(0.5) and s(0.65) == pytest.approx(0.5)
    assert s(0.3 - 1e-9) == pytest.approx(1, abs=1e-6)   # continuous across the boundary
    z = combine_scheds([0.5, 0., 0.5], [sched_lin(0, 1), sched_no(7, 7), sched_lin(1, 0)])   # zero-length phase skipped
    assert [z(0), z(0.5), z(1)] == [0, 1, 0]
    assert combine_scheds([1.], [sched_lin(3, 5)])(1) == 5

@pytest.mark.parametrize('pcts,n,msg', [([0.3, 0.6], 2, 'pcts must sum to 1'), ([0.5, 0.6], 2, 'pcts must sum to 1'),
                                        ([1.2, -0.2], 2, 'non-negative'), ([1.], 2, '1 pcts and 2 scheds')])
def test_combine_scheds_bad_pcts(pcts, n, msg):
    with pytest.raises(ValueError, match=msg): combine_scheds(pcts, [sched_no(1, 1)]*n)

def test_combine_scheds_pos_out_of_range():
    with pytest.raises(ValueError, match='pos must be in'): combine_scheds([1.], [sched_no(1, 1)])(1.5)

_tp = [torch.nn.Parameter(torch.zeros(3))]
_OPTS = {'AdamW': lambda: torch.optim.AdamW(_tp, lr=1e-3), 'SGD-mom': lambda: torch.optim.SGD(_tp, lr=0.1, momentum=0.9),
         'miniai Adam': lambda: Adam(_tp, lr=1e-3), 'miniai Momentum': lambda: Momentum(_tp, lr=0.1)}
_SETTINGS = [(100, dict(max_lr=6e-2)), (295, dict(max_lr=0.1, pct_start=0.25, div_factor=10, final_div_factor=100)),
             (7, dict(max_lr=1., base_momentum=0.8, max_momentum=0.9)), (50, dict(max_lr=0.3, pct_start=0.5)),
             (10, dict(max_lr=0.1, pct_start=0.05)), (2, dict(max_lr=0.1, pct_start=0.25))]   # < 1 warm-up step

@pytest.mark.parametrize('opt_name', list(_OPTS))
@pytest.mark.parametrize('steps,kw', _SETTINGS)
def test_one_cycle_equals_torch_at_every_step(opt_name, steps, kw):
    oa, ob = _OPTS[opt_name](), _OPTS[opt_name]()
    sa, sb = lr_scheduler.OneCycleLR(oa, total_steps=steps, **kw), OneCycle(ob, total_steps=steps, **kw)
    for i in range(steps):
        pa, pb = oa.param_groups[0], ob.param_groups[0]
        assert pb['lr'] == pytest.approx(pa['lr'], rel=1e-9, abs=1e-15), (i, pa['lr'], pb['lr'])
        assert get_hyper(pb, 'mom') == pytest.approx(get_hyper(pa, 'mom'), abs=1e-12), i
        oa.step(); ob.step(); sa.step(); sb.step()

def test_one_cycle_bad_input():
    with pytest.raises(ValueError, match='cycle_momentum=False'): OneCycle(SGD(_tp, 0.1), max_lr=0.1, total_steps=10)
    OneCycle(SGD(_tp, 0.1), max_lr=0.1, total_steps=10, cycle_momentum=False)
    with pytest.raises(ValueError, match='pct_start'): one_cycle_scheds(0.1, 10, pct_start=0.)
    with pytest.raises(ValueError, match='max_lr must be > 0'): one_cycle_scheds(0., 10)
    with pytest.raises(ValueError, match='total_steps'): one_cycle_scheds(0.1, 1)

def test_param_sched_any_hyper_and_clamps():
    opt = Adam(_tp, lr=0.1)
    s = ParamSched(opt, 5, lr=sched_lin(1., 0.), wd=sched_lin(0., 0.4))
    vals = []
    for _ in range(6): vals.append((opt.param_groups[0]['lr'], opt.param_groups[0]['wd'])); s.step()
    assert [v[0] for v in vals] == pytest.approx([1, .75, .5, .25, 0, 0])   # past the end: stays at the last value
    assert [v[1] for v in vals] == pytest.approx([0, .1, .2, .3, .4, .4])

def test_set_hyper_momentum_names():
    for opt in (torch.optim.SGD(_tp, lr=0.1, momentum=0.9), torch.optim.Adam(_tp, lr=0.1), Momentum(_tp, 0.1), Adam(_tp, 0.1, beta2=0.95)):
        set_hyper(opt.param_groups[0], 'mom', 0.7)
        assert get_hyper(opt.param_groups[0], 'mom') == 0.7
    assert opt.param_groups[0]['betas'] == (0.7, 0.95)
    with pytest.raises(ValueError, match='no momentum'): set_hyper(SGD(_tp, 0.1).param_groups[0], 'mom', 0.9)

def _learner(opt_func, lr=0.05, cbs=(), n=192, bs=32):
    torch.manual_seed(0)
    x = torch.randn(n + 64, 5); y = (x[:, 0] > 0).long()
    dls = DataLoaders.from_tensors(x[:n], y[:n], x[n:], y[n:], bs=bs)
    return Learner(torch.nn.Sequential(torch.nn.Linear(5, 2)), dls, F.cross_entropy, lr=lr, cbs=[TrainCB(), *cbs], opt_func=opt_func)

@pytest.mark.parametrize('opt_func', [torch.optim.AdamW, Adam, partial(torch.optim.SGD, momentum=0.9), Momentum])
def test_recorder_lengths_and_batch_sched(opt_func):
    rec = RecorderCB()
    learn = _learner(opt_func, cbs=[BatchSchedCB(partial(lr_scheduler.CosineAnnealingLR, T_max=12)), rec])
    learn.fit(2)
    nb = len(learn.train_dl)
    assert nb == 6 and all(len(v) == 2*nb for v in rec.recs.values())
    assert rec.recs['lr'][0] == pytest.approx(0.05)                  # the recorder sees the lr the batch used
    assert rec.recs['lr'][6] == pytest.approx(0.025)                 # half-way through the cosine
    assert rec.recs['mom'][0] == pytest.approx(0.9)
    assert all(isinstance(l, float) for l in rec.recs['loss'])

def test_epoch_sched_steps_per_epoch():
    rec = RecorderCB(lr=get_lr)
    learn = _learner(Adam, lr=0.1, cbs=[EpochSchedCB(partial(lr_scheduler.StepLR, step_size=1, gamma=0.5)), rec])
    learn.fit(3)
    assert rec.recs['lr'] == pytest.approx([0.1]*6 + [0.05]*6 + [0.025]*6)

def test_fit_one_cycle_schedule_and_cleanup():
    rec = RecorderCB()
    learn = _learner(partial(Adam, wd=1e-4), cbs=[rec])
    fit_one_cycle(learn, 3, max_lr=0.1)
    total = 3*len(learn.train_dl)
    ref = one_cycle_scheds(0.1, total)
    assert len(rec.recs['lr']) == total
    assert rec.recs['lr'] == pytest.approx([ref['lr'](i/(total - 1)) for i in range(total)], rel=1e-9)
    assert rec.recs['mom'] == pytest.approx([ref['mom'](i/(total - 1)) for i in range(total)], rel=1e-9)
    assert max(rec.recs['lr']) == pytest.approx(0.1, rel=1e-2) and rec.recs['lr'][0] == pytest.approx(0.1/25)
    assert not any(isinstance(c, BatchSchedCB) for c in learn.cbs)   # the scheduler callback was for this fit only
    with pytest.raises(ValueError, match='cycle_momentum=False'): fit_one_cycle(_learner(SGD), 1, max_lr=0.1)
    fit_one_cycle(_learner(SGD), 1, max_lr=0.1, cycle_momentum=False)

def test_one_cycle_matches_torch_inside_learner():
    # the same training with torch's OneCycleLR and with miniai's fit_one_cycle records the same lr and betas
    ra, rb = RecorderCB(), RecorderCB()
    la = _learner(torch.optim.AdamW, cbs=[BatchSchedCB(partial(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=12)), ra])
    la.fit(2)
    fit_one_cycle(_learner(torch.optim.AdamW, cbs=[rb]), 2, max_lr=0.1)
    assert rb.recs['lr'] == pytest.approx(ra.recs['lr'], rel=1e-9)
    assert rb.recs['mom'] == pytest.approx(ra.recs['mom'], rel=1e-9)
    assert rb.recs['loss'] == pytest.approx(ra.recs['loss'], rel=1e-5)

def test_has_learn_cb():
    class Peek(HasLearnCB):
        def after_fit(self, learn): self.seen = self.learn is learn
    peek = Peek()
    learn = _learner(SGD, cbs=[peek]); learn.fit(1)
    assert peek.seen
    with pytest.raises(AttributeError, match='learn is not set'): peek.learn

def test_sched_names_live_in_sgd_and_are_re_exported():
    import miniai.sgd as sgd, miniai.sched as sched
    for n in ('BaseSchedCB', 'BatchSchedCB', 'EpochSchedCB', 'HasLearnCB', 'RecorderCB', 'get_hyper', 'set_hyper'):
        assert getattr(sched, n) is getattr(sgd, n) and n in sched.__all__ and n in sgd.__all__

def test_recorder_keeps_tensors_and_reads_them_once(monkeypatch):
    calls = []
    orig = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, 'item', lambda self: calls.append(1) or orig(self))
    _learner(torch.optim.AdamW).fit(2)
    n_without = len(calls)
    rec = RecorderCB()
    learn = _learner(torch.optim.AdamW, cbs=[rec])
    learn.fit(2)
    assert len(calls) == 2*n_without                       # the recorder adds no per-batch host read
    assert all(isinstance(o, torch.Tensor) for o in rec._recs['loss'])
    losses = rec.recs['loss']
    assert len(losses) == 12 and all(isinstance(l, float) for l in losses)

def test_one_cycle_cb_resumes_from_state_dict():
    # a run interrupted after epoch 1 and resumed from the callbacks' state_dicts sees the same lrs and losses
    full = RecorderCB()
    la = _learner(torch.optim.AdamW, cbs=[OneCycleCB(0.1), full]); la.fit(2)
    nb = len(la.train_dl)
    r1, s1 = RecorderCB(), OneCycleCB(0.1)
    lb = _learner(torch.optim.AdamW, cbs=[s1, r1]); lb.fit(2, cbs=[_StopAfter(nb)])
    st_s, st_r = s1.state_dict(), r1.state_dict()
    assert st_s == {'last_step': nb, 'total_steps': 2*nb}
    assert all(type(v) in (float, type(None)) for vals in st_r['recs'].values() for v in vals)   # plain numbers only
    r2, s2 = RecorderCB(), OneCycleCB(0.1)
    lc = _learner(torch.optim.AdamW, cbs=[s2, r2])
    class _Load(Callback):
        order = 100
        def before_fit(self, learn): s2.load_state_dict(st_s); r2.load_state_dict(st_r)
    lc.model.load_state_dict(lb.model.state_dict()); lc.start_epoch = 1
    lc.fit(2, cbs=[_Load()])
    assert r2.recs['lr'] == pytest.approx(full.recs['lr'], rel=1e-9)
    with pytest.raises(ValueError, match='not a ParamSched state'): s2.load_state_dict({'sched': {}})

from miniai.callbacks import Callback, CancelFitException
from miniai.sched import OneCycleCB
class _StopAfter(Callback):
    order = 99
    def __init__(self, n): self.n, self.i = n, 0
    def after_batch(self, learn):
        if learn.training:
            self.i += 1
            if self.i == self.n: raise CancelFitException()

def test_recorder_survives_an_evaluation_pass():
    rec = RecorderCB()
    learn = _learner(torch.optim.AdamW, cbs=[rec]); learn.fit(1)
    before = rec.recs
    learn.fit(1, train=False)                      # e.g. capture_preds / tta_preds after training
    assert rec.recs == before and len(before['loss']) == len(learn.train_dl)
    learn.fit(1)                                   # a new training fit starts a new record
    assert len(rec.recs['loss']) == len(learn.train_dl)

def test_recorder_reads_the_param_group_after_the_optimizer_state_is_loaded():
    # a resumed run loads the optimizer's state, which replaces its param-group dicts: the record must follow
    rec = RecorderCB(lr=get_lr)
    learn = _learner(torch.optim.AdamW, cbs=[rec])
    class _Reload(Callback):
        order = 100
        def before_fit(self, learn): learn.opt.load_state_dict(learn.opt.state_dict())
    learn.fit(2, cbs=[OneCycleCB(0.1), _Reload()])
    ref = one_cycle_scheds(0.1, 2*len(learn.train_dl))
    assert rec.recs['lr'][-1] == pytest.approx(ref['lr'](1.), rel=1e-6)
