"Hooks are removed on every path out of a fit; activation statistics equal the directly computed ones."
import matplotlib
matplotlib.use('Agg')
import pytest, torch
from torch import nn
import torch.nn.functional as F

from miniai.activations import Hook, Hooks, HooksCallback, ActivationStats, append_stats, get_hist, get_min, set_seed
from miniai.callbacks import Callback, CancelFitException, CancelEpochException, CancelBatchException
from miniai.learner import Learner, TrainCB


def n_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())

def toy_setup(n_batches=4, bs=16):
    set_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(n_batches*bs, 4), torch.randint(0, 2, (n_batches*bs,))
    batches = list(zip(x.split(bs), y.split(bs)))
    return model, (batches, batches)

class RaiseCB(Callback):
    def __init__(self, exc, event='after_batch', at_iter=1): self.exc, self.event, self.at_iter = exc, event, at_iter
    def __getattr__(self, name):
        if name == self.__dict__.get('event'):
            def f(learn):
                if getattr(learn, 'iter', 0) >= self.at_iter and learn.training: raise self.exc
            return f
        raise AttributeError(name)


def test_hook_context_manager_and_remove():
    lin = nn.Linear(3, 2)
    with Hook(lin, append_stats) as h:
        lin(torch.randn(5, 3))
        assert len(lin._forward_hooks) == 1
    assert len(lin._forward_hooks) == 0 and len(h.stats[0]) == 1
    h2 = Hook(lin, append_stats)
    h2.remove(); h2.remove()               # idempotent
    assert len(lin._forward_hooks) == 0
    with pytest.raises(ZeroDivisionError):
        with Hook(lin, append_stats): 1/0
    assert len(lin._forward_hooks) == 0


def test_hooks_list_iterable_indexable_removed_on_exception():
    model, _ = toy_setup()
    with pytest.raises(RuntimeError):
        with Hooks(model, append_stats) as hs:
            model(torch.randn(3, 4))
            assert len(hs) == 5 and hs[0].stats[0] and [h for h in hs][-1] is hs[4]
            raise RuntimeError('boom')
    assert n_hooks(model) == 0
    hs = Hooks(model, append_stats)
    del hs[1]
    assert len(hs) == 4 and len(model[1]._forward_hooks) == 0
    hs.remove()
    assert n_hooks(model) == 0
    with pytest.raises(TypeError, match='nn.Module'): Hooks([model[0], 3], append_stats)
    assert n_hooks(model) == 0             # the first hook was undone


@pytest.mark.parametrize('exc', [None, CancelFitException(), CancelEpochException(), CancelBatchException(),
                                 RuntimeError('boom'), KeyboardInterrupt()])
@pytest.mark.parametrize('event', ['after_batch', 'before_batch', 'after_loss', 'after_backward'])
def test_no_hook_left_after_any_fit(exc, event):
    model, dls = toy_setup()
    hcb = HooksCallback(append_stats, nn.Linear)
    cbs = [TrainCB(), hcb] + ([RaiseCB(exc, event)] if exc is not None else [])
    learn = Learner(model, dls, F.cross_entropy, lr=0.1, cbs=cbs)
    try: learn.fit(2)
    except (RuntimeError, KeyboardInterrupt): pass
    assert n_hooks(model) == 0
    assert len(hcb) == 3


def test_keyboard_interrupt_propagates_and_hooks_removed():
    model, dls = toy_setup()
    astats = ActivationStats(nn.ReLU)
    learn = Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), astats, RaiseCB(KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt): learn.fit(1)
    assert n_hooks(model) == 0
    assert len(astats[0].stats[0]) == 2     # batches 0 and 1 were recorded before the interrupt


def test_hooks_callback_train_only_by_default_and_valid_on_request():
    model, dls = toy_setup(n_batches=3)
    train_only = HooksCallback(append_stats, nn.ReLU)
    both = HooksCallback(append_stats, nn.ReLU, on_valid=True)
    Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), train_only, both]).fit(2)
    assert len(train_only[0].stats[0]) == 2*3
    assert len(both[0].stats[0]) == 2*3*2
    mods = HooksCallback(append_stats, mods=[model[0]])
    Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), mods]).fit(1)
    assert len(mods) == 1 and mods[0].m is model[0]
    with pytest.raises(TypeError, match='mod_filter'): HooksCallback(append_stats, mod_filter=3)


def test_activation_stats_equal_direct_stats():
    set_seed(1)
    net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 3))
    xs = [torch.randn(32, 10)*3 for _ in range(3)]
    batches = [(x, torch.randint(0, 3, (32,))) for x in xs]
    astats = ActivationStats(nn.ReLU)
    Learner(net, (batches, batches), F.cross_entropy, lr=0., cbs=[TrainCB(), astats]).fit(1)  # lr 0: weights fixed
    h = astats[0]
    assert len(h.stats[0]) == 3
    for i, x in enumerate(xs):
        acts = net[1](net[0](x)).detach()
        assert abs(h.stats[0][i] - acts.mean().item()) < 1e-6
        assert abs(h.stats[1][i] - acts.std().item()) < 1e-6
        assert torch.equal(h.stats[2][i], acts.abs().histc(40, 0, 10))
        assert h.stats[2][i].device.type == 'cpu' and h.stats[2][i].shape == (40,)
    hist = get_hist(h)
    assert hist.shape == (40, 3)
    assert torch.allclose(hist, torch.stack(h.stats[2]).t().log1p())
    direct_dead = torch.stack([(net[1](net[0](x)).abs() < 0.25).float().mean() for x in xs])
    assert torch.allclose(get_min(h), direct_dead)


def test_plots_return_figures():
    model, dls = toy_setup()
    astats = ActivationStats(nn.ReLU)
    Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), astats]).fit(1)
    for f in (astats.color_dim, astats.dead_chart, astats.plot_stats):
        fig, axs = f()
        assert isinstance(fig, matplotlib.figure.Figure)
    with pytest.raises(ValueError, match='train first'): ActivationStats(nn.ReLU).plot_stats()


def test_plots_label_their_axes_and_draw_into_given_axes():
    import matplotlib.pyplot as plt
    model, dls = toy_setup()
    astats = ActivationStats(nn.ReLU)
    Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), astats]).fit(1)
    assert astats.layer_names() == ['layer 0', 'layer 1']
    try:
        fig, axs = astats.plot_stats()
        assert [ax.get_title() for ax in axs] == ['Means', 'Standard deviations']
        assert all(ax.get_xlabel() == 'training batch' and ax.get_ylabel() for ax in axs)
        assert [t.get_text() for t in axs[1].get_legend().get_texts()] == ['layer 0', 'layer 1']
        for f, ylabel in ((astats.color_dim, '|activation|'), (astats.dead_chart, 'fraction |x| < 0.25')):
            fig, axs = f(title='a run')
            assert fig._suptitle.get_text() == 'a run'
            drawn = list(axs.flat)[:2]
            assert [ax.get_title() for ax in drawn] == ['layer 0', 'layer 1']
            assert drawn[0].get_ylabel() == ylabel and drawn[-1].get_xlabel() == 'training batch'
            _, given = plt.subplots(1, 2)                        # the caller's axes, e.g. one row per run
            assert f(axs=given)[1] is given and all(ax.get_title() for ax in given)
            with pytest.raises(ValueError, match='need 2 axes'): f(axs=given[:1])
        img = astats.color_dim()[1].flat[0].get_images()[0]
        assert img.get_extent()[2:] == [0, 10]                   # the y axis reads in |activation| units
    finally:
        plt.close('all')
    both = ActivationStats(nn.ReLU, on_valid=True)
    mixed = ActivationStats(lambda m: isinstance(m, (nn.ReLU, nn.Linear)) and m is not model[-1])
    Learner(model, dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), both, mixed]).fit(1)
    try:
        assert both.plot_stats()[1][0].get_xlabel() == 'batch'
        assert mixed.layer_names()[:2] == ['layer 0 (Linear)', 'layer 1 (ReLU)']
    finally:
        plt.close('all')
