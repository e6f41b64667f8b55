"Mixed precision (miniai.accel): bf16 autocast on CPU trains, non-finite steps are skipped, autocast always left."
import math, pytest, torch
import torch.nn.functional as F
from torch import nn
from miniai.accel import MixedPrecision
from miniai.learner import Learner, TrainCB, DeviceCB
from miniai.callbacks import Callback, CancelFitException

def _learn(data, cb, *cbs, lr=0.5):
    "A Learner on `data` (the `linear_batches` fixture: 8 batches of 32, 20 features, 4 classes) with `cb` and `cbs`."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    return Learner(model, (data, data[:2]), F.cross_entropy, lr=lr, cbs=[DeviceCB('cpu'), cb, *cbs])

class LossCB(Callback):
    def before_fit(self, learn): self.losses = []
    def after_loss(self, learn):
        if learn.training: self.losses.append(learn.loss.item())

def test_bf16_trains_like_fp32(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    l32, l16 = LossCB(), LossCB()
    _learn(data, TrainCB(), l32).fit(5, valid=False)
    mp = MixedPrecision()
    _learn(data, mp, l16).fit(5, valid=False)
    assert mp.amp_dtype == torch.bfloat16 and mp.scaler is None and mp.n_skipped == 0
    assert l16.losses[-1] < 0.5 * l16.losses[0]
    assert abs(l16.losses[-1] - l32.losses[-1]) < 0.1

def test_autocast_active_in_forward_only(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    class Check(Callback):
        order = MixedPrecision.order + 1
        def after_predict(self, learn): self.pred_dtype = learn.preds.dtype; self.in_fwd = torch.is_autocast_enabled('cpu')
        def after_step(self, learn): self.in_step = torch.is_autocast_enabled('cpu')
    c = Check()
    _learn(data, MixedPrecision(), c).fit(1, valid=False)
    assert c.pred_dtype == torch.bfloat16 and c.in_fwd and not c.in_step
    assert not torch.is_autocast_enabled('cpu')

def test_nonfinite_step_skipped(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    class Poison(Callback):
        order = MixedPrecision.order + 1
        def after_backward(self, learn):
            if learn.iter == 3: next(learn.model.parameters()).grad[0, 0] = float('nan')
            self.before = [p.detach().clone() for p in learn.model.parameters()]
        def after_step(self, learn):
            if learn.iter == 3: self.unchanged = all(torch.equal(a, p) for a, p in zip(self.before, learn.model.parameters()))
            elif learn.iter == 4: self.changed = not all(torch.equal(a, p) for a, p in zip(self.before, learn.model.parameters()))
    p, mp = Poison(), MixedPrecision()
    learn = _learn(data, mp, p)
    learn.fit(1, valid=False)
    assert p.unchanged and p.changed and mp.n_skipped == 1
    assert all(torch.isfinite(q).all() for q in learn.model.parameters())

def test_autocast_left_after_cancel(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    class Stop(Callback):
        order = MixedPrecision.order + 1
        def after_predict(self, learn): raise CancelFitException()
    mp = MixedPrecision()
    _learn(data, mp, Stop()).fit(1)
    assert mp.autocast is None and not torch.is_autocast_enabled('cpu')


# ---- AccelerateCB (HF accelerate) ----
import subprocess, sys
from miniai.accel import AccelerateCB
from miniai.learner import MetricsCB
from miniai.datasets import fashion_dls, set_seed

import importlib.util
# accelerate is in the `dev` extra, so CI has it; without it only these tests skip (the MixedPrecision ones still run)
needs_accelerate = pytest.mark.skipif(importlib.util.find_spec('accelerate') is None, reason='pip install accelerate')

@needs_accelerate
def test_accelerate_trains_on_real_fashion_mnist():
    set_seed(0)
    dls = fashion_dls(64, n_train=2048, n_valid=512)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16*7*7, 10))
    opt0, m, losses = None, MetricsCB(), LossCB()
    learn = Learner(model, dls, F.cross_entropy, lr=0.05, cbs=[AccelerateCB(cpu=True), m, losses])
    learn.fit(2)
    first, last = sum(losses.losses[:5])/5, sum(losses.losses[-5:])/5
    assert last < 0.6*first, (first, last)                       # the training loss went down
    assert m.last('valid')['loss'] < 0.5*math.log(10)             # well below chance (ln 10) on held-out images
    # the plain model, optimizer and loaders are given back after the fit
    assert learn.model is model and 'forward' not in vars(model)
    assert type(learn.opt) is torch.optim.SGD and learn.dls is dls

def _accum_weights(bs, k, n=256, epochs=3, lr=0.5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g); y = (x @ torch.randn(20, 4, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    data = [(x[i:i+bs], y[i:i+bs]) for i in range(0, n, bs)]
    steps = []
    class Steps(Callback):
        def before_fit(self, learn): steps.append(learn.model[0].weight.detach().clone())
        def after_step(self, learn): steps.append(learn.model[0].weight.detach().clone())
    Learner(model, (data, data), F.cross_entropy, lr=lr, cbs=[AccelerateCB(grad_accum=k, cpu=True), Steps()]).fit(epochs, valid=False)
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    n_updates = sum(not torch.equal(a, b) for a, b in zip(steps, steps[1:]))
    return w, n_updates

@needs_accelerate
def test_gradient_accumulation_equals_the_big_batch():
    # Accumulating k=4 micro-batches of 8 must equal batches of 32: each micro-loss is divided by 4 and backward adds
    # the gradients, so the sum is the gradient of the mean over 32 items. Only the order of float32 additions
    # differs (relative precision 1.2e-7): after 24 SGD steps the weights agree to ~1e-7 relative (measured 1.2e-7);
    # 1e-5 leaves a 100x margin, while a real mistake (no division, or a step per micro-batch) is off by >1e-2.
    big, n_big = _accum_weights(32, 1)
    acc, n_acc = _accum_weights(8, 4)
    small, _ = _accum_weights(8, 1)
    rel = lambda a, b: ((a - b).abs().max()/b.abs().max()).item()
    assert n_big == n_acc == 3*8                     # one optimizer step per 32 items in both
    assert rel(acc, big) < 1e-5
    assert rel(small, big) > 1e-2                    # the control: without accumulation the result differs

@needs_accelerate
def test_accumulation_steps_at_the_end_of_each_epoch():
    # 5 batches per epoch, k=2: steps after batches 2, 4 and the incomplete group of batch 5 (as accelerate does)
    _, n = _accum_weights(16, 2, n=80, epochs=2)
    assert n == 2*3

@needs_accelerate
def test_bf16_through_accelerate_trains(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    l16 = LossCB()
    learn = _learn(data, AccelerateCB(mixed_precision='bf16', cpu=True), l16)
    learn.fit(5, valid=False)
    assert l16.losses[-1] < 0.5*l16.losses[0]
    assert not torch.is_autocast_enabled('cpu') and 'forward' not in vars(learn.model)

def test_bad_grad_accum():
    with pytest.raises(ValueError, match='grad_accum must be an int >= 1'): AccelerateCB(grad_accum=0)

def test_accelerate_is_optional():
    # `sys.modules['accelerate'] = None` makes `import accelerate` fail as if it were not installed
    code = ("import sys; sys.modules['accelerate'] = None\n"
            "import miniai.accel\n"
            "try: miniai.accel.AccelerateCB()\n"
            "except ImportError as e: print('ERR', e)\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'ERR' in res.stdout and 'pip install accelerate' in res.stdout


def _conv_learn(*cbs, amp=False):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(16, 3, 12, 12, generator=g) for _ in range(4)]
    data = [(x, (x.mean((1, 2, 3)) > 0).long()) for x in xs]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    learn = Learner(model, (data, data[:1]), F.cross_entropy, lr=0.1,
                    cbs=[DeviceCB('cpu'), MixedPrecision() if amp else TrainCB(), *cbs])
    learn.fit(2, valid=False)
    return model

def test_channels_last_changes_layout_not_numbers():
    from miniai.accel import ChannelsLastCB
    plain, cl = _conv_learn(), _conv_learn(ChannelsLastCB())
    for m in (cl[0], cl[3]): assert m.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain[3].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), cl.parameters()): torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and with bf16 autocast it still trains to finite weights
    assert all(torch.isfinite(p).all() for p in _conv_learn(ChannelsLastCB(), amp=True).parameters())

def test_time_train_step_reports_seconds():
    from miniai.accel import time_train_step, bf16_fast_on_cpu
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4*6*6, 3))
    t = time_train_step(model, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), amp=True, channels_last=True, n=2)
    assert 0 < t < 10
    assert isinstance(bf16_fast_on_cpu(), bool)


@pytest.mark.parametrize('ni, nf, ks, stride, bias, hw', [(8, 16, 3, 1, False, 4), (8, 16, 3, 2, False, 3),
                                                         (8, 16, 1, 1, True, 2), (4, 8, 5, 1, False, 4),
                                                         (4, 8, 3, 2, False, 1), (4, 8, 3, 2, True, 7)])
def test_small_conv_equals_conv2d(ni, nf, ks, stride, bias, hw):
    from miniai.accel import SmallConv2d, matmul_small_convs
    torch.manual_seed(0)
    ref = nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)
    ours = matmul_small_convs(nn.Sequential(nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)))[0]
    assert type(ours) is SmallConv2d
    ours.max_hw = 10**6   # take the matmul path at every size tested here
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad(): torch.testing.assert_close(ours(torch.ones(2, ni, hw, hw)), ref(torch.ones(2, ni, hw, hw)))
    x1 = torch.randn(3, ni, hw, hw, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    o1, o2 = ref(x1), ours(x2)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=1e-5)
    o1.square().sum().backward(); o2.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    with torch.autocast('cpu', dtype=torch.bfloat16):   # under autocast the matmul runs in bf16, like the conv
        assert ours(x2).dtype == ref(x1).dtype == torch.bfloat16


def test_matmul_small_convs_keeps_the_state_dict():
    from miniai.accel import matmul_small_convs
    from miniai.resnet import resnet
    torch.manual_seed(0)
    m = resnet((8, 16, 32, 64), ks0=5, stem='conv').eval()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 1, 28, 28)
    before = m(x)
    matmul_small_convs(m)
    assert m.state_dict().keys() == sd.keys() and all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    torch.testing.assert_close(m(x), before, atol=1e-5, rtol=1e-5)


def test_precision_choice_on_cuda(monkeypatch):
    from miniai.accel import resolve_precision
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert resolve_precision('auto', 'cuda') == 'bf16'
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)   # before Ampere: fp16 + loss scaling
    assert resolve_precision('auto', 'cuda') == 'fp16'

def test_bf16_on_cuda_does_not_wait_for_the_gpu_each_step():
    # the inf/NaN check of bf16 steps reads a value back each step: done where it is free (the CPU), not on CUDA
    mp = MixedPrecision(device='cuda', dtype=torch.bfloat16)
    class L: model = nn.Linear(2, 2)
    mp.before_fit(L())
    assert mp.check is False and mp.scaler is None and mp.n_skipped == 0
    assert MixedPrecision(check_finite=True, device='cuda', dtype=torch.bfloat16).check_finite is True


# ---- fp16's loss scaler in checkpoints ----
def test_fp16_scaler_state_round_trips_and_persists_across_fits(linear_batches):
    data = linear_batches(8, bs=32, n_in=20, n_out=4)
    mp = MixedPrecision(dtype=torch.float16)
    learn = _learn(data, mp, lr=1e-4)
    learn.loss_func = lambda p, y: 300*F.cross_entropy(p, y)      # overflows fp16 at the first scale: the scale falls
    learn.fit(1, valid=False)
    sd = mp.state_dict()
    assert sd['scaler']['scale'] < 65536. and sd['n_skipped'] == mp.n_skipped > 0
    assert all(isinstance(v, (int, float)) for v in sd['scaler'].values())   # plain numbers: a weights-only checkpoint
    learn.fit(1, valid=False)             # a later fit continues from the scale found: no overflow to find it again
    assert mp.n_skipped == 0 and mp.state_dict()['scaler']['_growth_tracker'] > 0
    other = MixedPrecision(dtype=torch.float16)
    _learn(data, other, lr=1e-2).fit(0)                            # a fit of 0 epochs makes the scaler, as a resume would
    other.load_state_dict(sd)
    assert other.scaler.state_dict() == sd['scaler'] and other.n_skipped == sd['n_skipped']
    bf16 = MixedPrecision()
    _learn(data, bf16).fit(0)
    bf16.load_state_dict(sd)                                        # a bf16 run has no scaler: the saved one is ignored
    assert bf16.scaler is None and bf16.state_dict()['scaler'] is None
