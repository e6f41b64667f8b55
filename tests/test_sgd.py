"Optimizers from scratch (miniai.sgd): numerics vs torch.optim and vs the formulas, bad input, state round trips."
from functools import partial
import pytest, torch
import torch.nn.functional as F
from miniai.sgd import (SGD, Momentum, RMSProp, Adam, LAMB, GenericOptimizer, AverageGrad, AverageSqrGrad, StepCount,
                        sgd_step, weight_decay, l2_reg, momentum_step, rms_step, adam_step, check_hypers)

def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]

def _train(m, o, batches):
    for x, y in batches:
        F.cross_entropy(m(x), y).backward(); o.step(); o.zero_grad()

def max_diff(opt_a, opt_b, n_steps=20):
    "Largest weight difference, over all steps, between two copies of a model trained with opt_a and opt_b."
    ma, mb = _model(), _model()
    oa, ob = opt_a(ma.parameters()), opt_b(mb.parameters())
    d = 0.
    for batch in _batches(n_steps):
        _train(ma, oa, [batch]); _train(mb, ob, [batch])
        d = max(d, max((a - b).abs().max().item() for a, b in zip(ma.parameters(), mb.parameters())))
    return d

@pytest.mark.parametrize('lr,wd', [(0.1, 0.), (0.1, 0.01), (0.5, 0.1)])
def test_sgd_matches_torch_sgd(lr, wd):
    # for plain SGD, decoupled decay p*(1-lr*wd) and torch's L2 weight_decay are the same update
    assert max_diff(partial(SGD, lr=lr, wd=wd), partial(torch.optim.SGD, lr=lr, weight_decay=wd)) < 1e-6

@pytest.mark.parametrize('wd,betas,eps', [(0., (0.9, 0.99), 1e-5), (0.1, (0.9, 0.99), 1e-5), (0.01, (0.8, 0.999), 1e-3)])
def test_adam_matches_torch_adamw(wd, betas, eps):
    assert max_diff(partial(Adam, lr=1e-2, wd=wd, beta1=betas[0], beta2=betas[1], eps=eps),
                    partial(torch.optim.AdamW, lr=1e-2, weight_decay=wd, betas=betas, eps=eps)) < 1e-6

def _scalar_run(opt, grads):
    p = opt.param_groups[0]['params'][0]
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64); opt.step(); out.append(p.item())
    return out

def test_momentum_formula():
    # dampened momentum starting from zero: torch.optim.SGD starts its buffer at the first gradient, so no torch match
    p = torch.nn.Parameter(torch.tensor([1.], dtype=torch.float64))
    got = _scalar_run(Momentum([p], lr=0.5, wd=0.1, mom=0.8), [2., -1., 4., 0.5])
    avg, w, want = 0., 1., []
    for g in [2., -1., 4., 0.5]:
        w *= 1 - 0.5*0.1; avg = 0.8*avg + 0.2*g; w -= 0.5*avg; want.append(w)
    assert got == pytest.approx(want, abs=1e-12)

def test_rmsprop_formula():
    # the lesson's RMSProp starts sqr_avg at the first grad**2 (torch.optim.RMSprop starts at 0)
    p = torch.nn.Parameter(torch.tensor([1.], dtype=torch.float64))
    got = _scalar_run(RMSProp([p], lr=0.01, sqr_mom=0.9, eps=1e-5), [2., -1., 4.])
    sq, w, want = None, 1., []
    for g in [2., -1., 4.]:
        sq = g*g if sq is None else sq
        sq = 0.9*sq + 0.1*g*g; w -= 0.01*g/(sq**0.5 + 1e-5); want.append(w)
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] == pytest.approx(1 - 0.01*2/(2 + 1e-5))

def test_adam_debiasing_formula():
    p = torch.nn.Parameter(torch.tensor([1.], dtype=torch.float64))
    got = _scalar_run(Adam([p], lr=0.1, beta1=0.9, beta2=0.99, eps=1e-5), [2., -1.])
    m1, v1 = 0.1*2, 0.01*4
    w1 = 1 - 0.1*(m1/0.1)/((v1/0.01)**0.5 + 1e-5)          # first step: exactly lr*sign(g)
    m2, v2 = 0.9*m1 + 0.1*-1, 0.99*v1 + 0.01*1
    w2 = w1 - 0.1*(m2/(1 - 0.9**2))/((v2/(1 - 0.99**2))**0.5 + 1e-5)
    assert got == pytest.approx([w1, w2], abs=1e-12)

def test_lamb_formula():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    p0, g = p.detach().clone(), torch.randn(4, 3, dtype=torch.float64)
    opt = LAMB([p], lr=0.1, wd=0.01, eps=1e-5)
    p.grad = g.clone(); opt.step()
    step = g/(g.abs() + 1e-5) + 0.01*p0
    q = min((p0.pow(2).mean().sqrt()/step.pow(2).mean().sqrt()).item(), 10.)
    assert torch.allclose(p.detach(), p0 - 0.1*q*step, atol=1e-12)

def test_lamb_trust_ratio_capped_and_zero_weights():
    p = torch.nn.Parameter(torch.zeros(3))           # rms(p) = 0: trust ratio falls back to 1
    opt = LAMB([p], lr=0.1)
    p.grad = torch.tensor([1., -2., 3.]); opt.step()
    assert torch.allclose(p.detach(), -0.1*torch.tensor([1., -1., 1.]), atol=1e-5)

@pytest.mark.parametrize('name', ['SGD', 'Momentum', 'RMSProp', 'Adam'])
def test_generic_optimizer_gives_identical_updates(name):
    pairs = {
        'SGD': (partial(SGD, lr=0.1, wd=0.01), partial(GenericOptimizer, steppers=[weight_decay, sgd_step], lr=0.1, wd=0.01)),
        'Momentum': (partial(Momentum, lr=0.1, wd=0.01, mom=0.9),
                     partial(GenericOptimizer, steppers=[weight_decay, momentum_step], stats=[AverageGrad()], lr=0.1, wd=0.01)),
        'RMSProp': (partial(RMSProp, lr=1e-2), partial(GenericOptimizer, steppers=[rms_step], stats=[AverageSqrGrad(first=True)], lr=1e-2)),
        'Adam': (partial(Adam, lr=1e-2, wd=0.1), partial(GenericOptimizer, steppers=[weight_decay, adam_step],
                                                         stats=[AverageGrad(), AverageSqrGrad(), StepCount()], lr=1e-2, wd=0.1)),
    }
    assert max_diff(*pairs[name]) < 1e-6

def test_weight_decay_vs_l2_for_adam():
    def one_step(l2, wd=1e-3):
        p = torch.nn.Parameter(torch.tensor([1.]))
        steppers = [l2_reg if l2 else weight_decay, adam_step]
        opt = GenericOptimizer([p], steppers, [AverageGrad(), AverageSqrGrad(), StepCount()], lr=0.01, wd=wd)
        p.grad = torch.tensor([0.]); opt.step()
        return p.item()
    assert one_step(l2=False) == pytest.approx(1 - 0.01*1e-3)              # p * (1 - lr*wd)
    assert one_step(l2=True) == pytest.approx(1 - 0.01*1e-3/(1e-3 + 1e-5))  # normalised by Adam: almost a full lr

@pytest.mark.parametrize('make,msg', [
    (lambda ps: SGD(ps, lr=-0.1), 'lr must be a number >= 0, got -0.1'),
    (lambda ps: SGD(ps, lr=0.1, wd=-1), 'wd must be a number >= 0, got -1'),
    (lambda ps: Momentum(ps, lr=0.1, mom=1.0), 'mom must be a number in [0, 1), got 1.0'),
    (lambda ps: Momentum(ps, lr=0.1, mom=-0.1), 'mom must be a number in [0, 1), got -0.1'),
    (lambda ps: RMSProp(ps, lr=0.1, sqr_mom=1.5), 'sqr_mom must be a number in [0, 1), got 1.5'),
    (lambda ps: RMSProp(ps, lr=0.1, eps=0.), 'eps must be a number > 0, got 0.0'),
    (lambda ps: Adam(ps, lr=0.1, beta1=1.0), 'beta1 must be a number in [0, 1), got 1.0'),
    (lambda ps: Adam(ps, lr=0.1, beta2=-0.5), 'beta2 must be a number in [0, 1), got -0.5'),
    (lambda ps: Adam(ps, lr=0.1, eps=-1e-8), 'eps must be a number > 0, got -1e-08'),
    (lambda ps: LAMB(ps, lr=float('nan')), 'lr must be a number >= 0, got nan'),
    (lambda ps: GenericOptimizer(ps, [sgd_step]), 'needs a learning rate'),
])
def test_bad_input(make, msg):
    with pytest.raises(ValueError) as e: make(_model().parameters())
    assert msg in str(e.value)

@pytest.mark.parametrize('make', [partial(Momentum, lr=0.1), partial(RMSProp, lr=1e-2), partial(Adam, lr=1e-2, wd=0.1),
                                  partial(LAMB, lr=1e-2, wd=0.1)])
def test_state_dict_round_trip(make):
    batches = _batches(10, seed=1)
    ma = _model(); oa = make(ma.parameters()); _train(ma, oa, batches[:5])
    mb = _model(seed=3); mb.load_state_dict(ma.state_dict())
    ob = make(mb.parameters()); ob.load_state_dict(oa.state_dict())
    assert ob.state_dict()['state'].keys() == oa.state_dict()['state'].keys()
    _train(ma, oa, batches[5:]); _train(mb, ob, batches[5:])
    for a, b in zip(ma.parameters(), mb.parameters()): assert torch.equal(a, b)

def test_torch_lr_scheduler_drives_miniai_optimizers():
    opt = Adam(_model().parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(); sched.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05)
    opt = Momentum(_model().parameters(), lr=0.1)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1., total_steps=10)
    assert opt.param_groups[0]['momentum'] == pytest.approx(0.95)   # OneCycleLR cycles our 'momentum' key

def test_usable_as_learner_opt_func():
    from miniai.datasets import DataLoaders
    from miniai.learner import Learner, TrainCB
    torch.manual_seed(0)
    x = torch.randn(256, 5); y = (x[:, 0] > 0).long()
    dls = DataLoaders.from_tensors(x[:192], y[:192], x[192:], y[192:], bs=32)
    model = torch.nn.Sequential(torch.nn.Linear(5, 2))
    before = F.cross_entropy(model(x), y).item()
    learn = Learner(model, dls, F.cross_entropy, lr=0.05, cbs=[TrainCB()], opt_func=partial(Adam, wd=1e-4))
    learn.fit(3)
    assert isinstance(learn.opt, Adam) and learn.opt.param_groups[0]['wd'] == 1e-4
    assert F.cross_entropy(model(x), y).item() < before

def test_check_hypers_ignores_unknown_names():
    check_hypers(lr=0.1, foo=-3)
    with pytest.raises(ValueError, match='lr must be a number'): check_hypers(lr='0.1')
