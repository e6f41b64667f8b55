"The GPU fast path (miniai.fastpath): device-resident loaders, GraphedStep, GraphTrainCB; the logic on the CPU, graphs on CUDA."
import math, warnings, pytest, torch
import torch.nn.functional as F
from torch import nn
from miniai.learner import Learner, TrainCB, DeviceCB, MetricsCB
from miniai.datasets import fashion_dls, set_seed
from miniai.fastpath import DeviceDL, fast_dls, GraphedStep, GraphTrainCB, fast_cbs, on_gpu
from miniai.accel import ChannelsLastCB

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason='CUDA graphs need a CUDA GPU; this machine has none')

def test_device_loaders_give_the_normal_loaders_batches():
    # real Fashion-MNIST: same seed, same batches, bit for bit (same normalisation steps in the same order)
    ref = fashion_dls(128, n_train=1000, n_valid=300, generator=torch.Generator().manual_seed(3))
    fast = fast_dls(128, 'cpu', n_train=1000, n_valid=300, generator=torch.Generator().manual_seed(3), drop_last=False)
    for a, b in ((ref.train, fast.train), (ref.valid, fast.valid)):
        assert len(a) == len(b)
        for (x1, y1), (x2, y2) in zip(a, b): assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert fast.train.x.dtype == torch.uint8 and fast.valid.bs == 256
    assert len(fast_dls(128, 'cpu', n_train=1000, n_valid=10).train) == 1000//128     # partial batch dropped by default

def test_device_loader_refuses_bad_input():
    with pytest.raises(TypeError, match='uint8'): DeviceDL(torch.zeros(4, 1, 2, 2), torch.zeros(4), device='cpu')
    with pytest.raises(ValueError, match='same length'):
        DeviceDL(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), device='cpu')

def _small_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

def _fit_fast(cbs, device='cpu', epochs=1, n=1024):
    from miniai.sched import BatchSchedCB
    set_seed(0)
    dls = fast_dls(128, device, n_train=n, n_valid=256, generator=torch.Generator().manual_seed(0))
    model, m = _small_cnn(), MetricsCB()
    sched = BatchSchedCB(lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=epochs*len(dls.train), cycle_momentum=False))
    learn = Learner(model, dls, F.cross_entropy, lr=1e-2, opt_func=torch.optim.AdamW, cbs=[DeviceCB(device), *cbs, m, sched])
    learn.fit(epochs)
    return model, m

def test_graph_train_cb_is_train_cb_on_the_cpu():
    # on the CPU GraphedStep runs the step eagerly: the same operations as TrainCB's five events, so the same weights
    a, ma = _fit_fast([GraphTrainCB(dtype=None)])
    b, mb = _fit_fast([TrainCB()])
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p, q)
    assert ma.history == [{**r, 'time': ra['time']} for r, ra in zip(mb.history, ma.history)]
    # and with bf16 autocast it learns (the training loss falls below chance, ln 10)
    _, m16 = _fit_fast(fast_cbs('bf16'), n=4096)
    assert m16.last('valid')['loss'] < math.log(10) - 0.2

def test_fast_cbs():
    assert [type(c) for c in fast_cbs()] == [GraphTrainCB, ChannelsLastCB] and fast_cbs()[0].dtype == torch.bfloat16
    assert fast_cbs()[0].graphs is False and fast_cbs(graphs=True)[0].graphs is True
    with pytest.raises(ValueError, match="'bf16' or 'fp32'"): fast_cbs('fp16')
    assert on_gpu('cpu') is False

@needs_cuda
def test_device_loaders_on_cuda_match_the_cpu():
    a = fast_dls(256, 'cpu', n_train=1024, n_valid=512, generator=torch.Generator().manual_seed(0))
    b = fast_dls(256, 'cuda', n_train=1024, n_valid=512, generator=torch.Generator().manual_seed(0))
    for (x1, y1), (x2, y2) in zip(a.train, b.train):
        assert x2.is_cuda and torch.equal(y1, y2.cpu()) and torch.allclose(x1, x2.cpu(), rtol=0, atol=1e-6)

@needs_cuda
def test_cuda_graph_step_equals_the_eager_step():
    # an MLP (no cuDNN, no TF32 matmuls by default) with AdamW and an lr changed every step, as 1cycle does
    def train(graphs):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4)).cuda()
        opt = torch.optim.AdamW(model.parameters(), 1e-2)
        step = GraphedStep(model, F.cross_entropy, opt, dtype=None, graphs=graphs)
        g = torch.Generator().manual_seed(1)
        for i in range(12):
            x = torch.randn(32, 20, generator=g).cuda(); y = (x[:, :4]).argmax(1)
            opt.param_groups[0]['lr'] = 1e-2*(1 + i)/12
            step(x, y)
        torch.cuda.synchronize()
        return model, step
    with warnings.catch_warnings():
        warnings.simplefilter('error')                # no silent fall-back to eager
        (mg, sg), (me, _) = train(True), train(False)
    assert sg.graph is not None and sg.why_eager is None
    for p, q in zip(mg.parameters(), me.parameters()): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

@needs_cuda
def test_where_the_graph_is_captured_does_not_change_the_weights():
    "A resumed run captures its graph mid-run: a graphed run must give the same bits whichever step it captures at."
    from miniai.checkpoint import deterministic_training
    def train(warmup):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                              nn.Linear(8*14*14, 10)).cuda()
        opt = torch.optim.AdamW(model.parameters(), 1e-2, weight_decay=0.1)
        step = GraphedStep(model, F.cross_entropy, opt, dtype=torch.bfloat16, warmup=warmup)
        g = torch.Generator().manual_seed(1)
        for i in range(12):
            x, y = torch.randn(64, 1, 28, 28, generator=g).cuda(), torch.randint(0, 10, (64,), generator=g).cuda()
            opt.param_groups[0]['lr'] = 1e-2*(1 + i)/12   # changed every step, as 1cycle does
            step(x, y)
        torch.cuda.synchronize()
        assert step.graph is not None and step.why_eager is None and step.n_warm == warmup
        return model.state_dict()
    with deterministic_training():
        first, *others = [train(w) for w in (1, 3, 8)]   # captured at step 2, 4 or 9
    for sd in others: assert all(torch.equal(first[k], sd[k]) for k in first)

def test_lr_tensors_stand_in_for_the_schedulers_floats():
    "The logic of GraphedStep's lr tensors (on the CPU, with tensors set by hand): filled, swapped in, floats restored."
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD([{'params': [model.weight], 'lr': 0.1}, {'params': [model.bias], 'lr': 0.2}])
    step = GraphedStep(model, F.cross_entropy, opt, dtype=None)
    step.lrs = [torch.tensor(0.), None]            # the first group takes a tensor lr, the second only floats
    with step._lr_tensors():
        assert opt.param_groups[0]['lr'] is step.lrs[0] and step.lrs[0].item() == pytest.approx(0.1)
        assert opt.param_groups[1]['lr'] == 0.2
    assert [pg['lr'] for pg in opt.param_groups] == [0.1, 0.2]
    with pytest.raises(KeyError):                  # restored even when the step fails
        with step._lr_tensors(): raise KeyError
    assert [pg['lr'] for pg in opt.param_groups] == [0.1, 0.2]
    assert step._frozen() == [(None, None, 0), (0.2, None, 0)]   # the float lr is frozen in a replay, the tensor one is not
    # which groups get a tensor: Adam-style optimizers (made capturable, step counts moved), not SGD
    adam = torch.optim.AdamW(model.parameters(), 1e-3)
    model(torch.randn(2, 3)).sum().backward(); adam.step()      # creates the state, with step counts as tensors
    (s := GraphedStep(model, F.cross_entropy, adam, dtype=None))._make_capturable('cpu')
    assert adam.param_groups[0]['capturable'] and s.lrs[0].item() == pytest.approx(1e-3)
    sgd = GraphedStep(model, F.cross_entropy, opt, dtype=None); sgd._make_capturable('cpu')
    assert sgd.lrs == [None, None] and 'capturable' not in opt.param_groups[0]

@needs_cuda
def test_graph_train_cb_trains_on_cuda():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        model, m = _fit_fast(fast_cbs('bf16', graphs=True), device='cuda', epochs=3, n=4096)
    _, me = _fit_fast(fast_cbs('bf16', graphs=False), device='cuda', epochs=3, n=4096)   # the same steps, no graph
    graph, eager = m.last('valid')['loss'], me.last('valid')['loss']
    assert graph < math.log(10) - 0.2 and next(model.parameters()).is_cuda   # it learnt: below chance (ln 10)
    assert abs(graph - eager) < 0.05, (graph, eager)                         # and as the eager steps do

def test_graphed_step_runs_eagerly_off_cuda():
    # graphs asked for, but the batch is on the CPU: no warm-up on a side stream, no capture, the plain step
    torch.manual_seed(0)
    model = nn.Linear(20, 4)
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    step = GraphedStep(model, F.cross_entropy, opt, dtype=None, graphs=True, warmup=1)
    x, y = torch.randn(16, 20), torch.randint(0, 4, (16,))
    losses = [step(x, y)[1].item() for _ in range(5)]
    assert step.graph is None and step.n_warm == 0 and step.why_eager is None
    assert losses[-1] < losses[0] and not step(x, y)[1].requires_grad   # the returned loss keeps no autograd graph


def test_graph_outputs_are_copied_for_callbacks_that_keep_them():
    "A replayed CUDA graph writes each step's preds and loss into the same tensors; GraphTrainCB hands out copies."
    class Replaying:                                   # stands in for a captured GraphedStep (no GPU here)
        graph = object()
        def __init__(self): self.preds, self.loss, self.n = torch.zeros(4, 3), torch.zeros(()), 0
        def __call__(self, x, y):
            self.n += 1
            self.preds.fill_(0.); self.preds[:, self.n % 3] = 1.; self.loss.fill_(float(self.n))   # in place, as a replay
            return self.preds, self.loss
    cb = GraphTrainCB(dtype=None)
    batches = [(torch.zeros(4, 2), torch.full((4,), i % 3)) for i in range(1, 7)]
    learn = Learner(nn.Linear(2, 3), (batches, []), F.cross_entropy, lr=0.1, cbs=[cb], opt_func=None)
    m = MetricsCB(quiet=True)
    m.flush_every = 100                                # every batch is kept until the end of the epoch
    cb.before_fit = lambda learn: setattr(cb, 'run', Replaying())
    learn.fit(1, valid=False, cbs=[m])
    assert m.history[0]['loss'] == pytest.approx(sum(range(1, 7))/6)   # each step's own loss, not six times the last


# ---- callbacks GraphTrainCB cannot honour are refused, in one message naming them and their events ----
from miniai.callbacks import Callback
from miniai.learner import TrainLearner
from miniai.accel import MixedPrecision

class ClipCB(Callback):
    def after_backward(self, learn): torch.nn.utils.clip_grad_norm_(learn.model.parameters(), 1.)
class SkipBadLossCB(Callback):
    def after_loss(self, learn): pass
class ReadPredsCB(Callback):
    def after_predict(self, learn): pass

def _graph_learn(*cbs, cls=Learner):
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    return cls(nn.Linear(4, 3), (batches, batches[:1]), F.cross_entropy, lr=0.1, cbs=[GraphTrainCB(dtype=None), *cbs])

@pytest.mark.parametrize('cb, event', [(ClipCB(), 'ClipCB.after_backward'), (SkipBadLossCB(), 'SkipBadLossCB.after_loss'),
                                       (ReadPredsCB(), 'ReadPredsCB.after_predict'), (TrainCB(), 'TrainCB.step'),
                                       (MixedPrecision(), 'MixedPrecision.backward')])
def test_graph_train_cb_refuses_callbacks_it_cannot_honour(cb, event):
    learn = _graph_learn(cb)
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError) as e: learn.fit(1)
    msg = str(e.value)
    assert 'GraphTrainCB' in msg and event in msg and '\n' not in msg
    assert torch.equal(learn.model.weight, w)            # refused before any step

def test_graph_train_cb_names_every_problem_at_once_and_allows_evaluation():
    learn = _graph_learn(ClipCB(), SkipBadLossCB())
    with pytest.raises(ValueError, match=r'ClipCB\.after_backward, SkipBadLossCB\.after_loss'): learn.fit(1)
    learn.fit(1, train=False)                            # no training step: nothing to refuse
    with pytest.raises(ValueError, match=r'TrainLearner\.predict \(a method of the Learner subclass'):
        _graph_learn(cls=TrainLearner).fit(1)

def test_graph_train_cb_accepts_what_the_fast_path_trains_with():
    from miniai.sgd import RecorderCB
    from miniai.sched import OneCycleCB
    from miniai.averaging import EMACB
    learn = _graph_learn(MetricsCB(quiet=True), RecorderCB(), OneCycleCB(0.1, cycle_momentum=False), EMACB(0.9),
                         ChannelsLastCB(), DeviceCB('cpu'))
    learn.fit(1)
