"""Features that compose: each of {Learner + TrainCB, MomentumLearner, EMACB, LookaheadCB, bf16 MixedPrecision, fp16
MixedPrecision with its GradScaler, DDPCB on 2 processes} x {resume in a new Learner, an evaluation pass between epochs,
an evaluation pass right after `load`} ends bit-identical to its uninterrupted run, and no evaluation pass changes a
checkpoint file (the cases: `tests/compose_cases.py`). Plus torcheval's accuracy reduced over processes equal to
miniai's, a callback replaced in place running, and loaded averages landing on the model's device. The CUDA cases
run in `make gpu-check` and skip elsewhere."""
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

import compose_cases as C
from launch import torchrun
from miniai.averaging import EMACB, LookaheadCB, _float_state
from miniai.checkpoint import deterministic_training, read_checkpoint
from miniai.callbacks import Callback

HAS_CUDA = torch.cuda.is_available()
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not HAS_CUDA, reason='needs a CUDA GPU'))]

def exact(device):
    "Deterministic kernels where the device has others (CUDA); the CPU's are deterministic already."
    return deterministic_training() if device == 'cuda' else nullcontext()

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The uninterrupted run of a feature on a device, computed once per module."
    cache = {}
    def get(feature, device):
        if (feature, device) not in cache:
            cache[feature, device] = C.uninterrupted(feature, tmp_path_factory.mktemp(f'{feature}-{device}'), device=device)
        return cache[feature, device]
    return get

@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('scenario', C.SCENARIOS)
@pytest.mark.parametrize('feature', C.FEATURES)
def test_an_interrupted_run_equals_the_uninterrupted_one(feature, scenario, device, reference, tmp_path):
    with exact(device):
        ref = reference(feature, device)
        got, changed = C.run_scenario(scenario, feature, tmp_path, device=device)
    assert changed == [], f"{feature}, {scenario}: the evaluation pass changed {changed}"
    diff = C.differences(ref, got)
    assert not diff, f"{feature}, {scenario}: differs from the uninterrupted run in {len(diff)} places: {diff[:6]}"

def test_the_fp16_case_exercises_the_loss_scaler(tmp_path):
    # the case is only a test of the scaler's state if that state has left its defaults by the time of the checkpoint
    learn = C.interrupted('fp16', tmp_path/'ck.pth')
    mp = next(cb for cb in learn.cbs if type(cb).__name__ == 'MixedPrecision')
    assert mp.scaler is not None and mp.scaler.get_scale() != torch.amp.GradScaler('cpu').get_scale()

def test_the_ema_checkpoint_holds_the_models_own_weights(tmp_path):
    learn = C.interrupted('ema', tmp_path/'ck.pth')
    saved = read_checkpoint(tmp_path/'ck.pth')
    ema = next(cb for cb in learn.cbs if isinstance(cb, EMACB))
    for k, v in learn.model.state_dict().items(): assert torch.equal(saved['model'][k], v), k
    assert any(not torch.equal(a, t) for a, t in zip(ema.avg, _float_state(learn.model)))   # and they are not the average

@pytest.mark.parametrize('make, attr', [(lambda: EMACB(0.9), 'avg'), (lambda: LookaheadCB(k=2), 'slow')])
def test_loaded_averages_land_on_the_models_device(make, attr):
    # a checkpoint is read onto the CPU; the callback's tensors must follow the model (here on the 'meta' device,
    # which stands for a GPU on a machine without one: a CPU tensor next to it would be an error in the next step)
    cpu_model, model = nn.Linear(3, 2), nn.Linear(3, 2, device='meta')
    saved = make()
    saved.before_fit(type('L', (), {'model': cpu_model})())
    cb = make()
    cb.learn = type('L', (), {'model': model})()
    cb.before_fit(cb.learn)
    cb.load_state_dict(saved.state_dict())
    assert [t.device.type for t in getattr(cb, attr)] == ['meta'] * 2

@pytest.mark.parametrize('device', DEVICES)
def test_loaded_averages_are_on_the_models_device_after_a_resume(device, tmp_path):
    with exact(device):
        C.interrupted('ema', tmp_path/'ck.pth', device=device)
        learn = C.make_learner('ema', tmp_path/'ck.pth', device=device, seed=1)
        learn.load(tmp_path/'ck.pth')
        learn.fit(C.N_EPOCHS)
    ema = next(cb for cb in learn.cbs if isinstance(cb, EMACB))
    assert {a.device for a in ema.avg} == {next(learn.model.parameters()).device}

def test_a_callback_replaced_in_place_runs(tmp_path):
    class Count(Callback):
        def __init__(self): self.n = 0
        def after_batch(self, learn): self.n += 1
    old, new = Count(), Count()
    learn = C.make_learner('plain', tmp_path/'ck.pth', extra_cbs=[old])
    learn.fit(1)
    learn.cbs[learn.cbs.index(old)] = new
    learn.fit(1)
    assert (old.n, new.n) == (8, 8)   # 6 training + 2 validation batches each


# ---- data parallel: 2 gloo processes under torchrun ----
@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    res = torchrun(Path(__file__).with_name('compose_cases.py'), out)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-5000:]
    return [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(2)]

@pytest.mark.parametrize('scenario', C.SCENARIOS)
def test_ddp_interrupted_runs_equal_the_uninterrupted_one(ddp_results, scenario):
    for rank, res in enumerate(ddp_results):
        assert res['world'] == 2
        assert not isinstance(res[scenario], str), f"rank {rank}: {res[scenario][-3000:]}"
        got, changed = res[scenario]
        assert changed == [], f"rank {rank}, {scenario}: the evaluation pass changed {changed}"
        diff = C.differences(res['uninterrupted'], got)
        assert not diff, f"rank {rank}, {scenario}: differs from the uninterrupted run in {len(diff)} places: {diff[:6]}"

def test_ddp_ranks_draw_their_own_random_numbers(ddp_results):
    # the point of the per-rank generator states: rank 1 does not repeat rank 0's dropout masks and shuffles
    r0, r1 = (r['uninterrupted']['rng']['torch'] for r in ddp_results)
    assert not torch.equal(r0, r1)

def test_ddp_torcheval_accuracy_equals_miniais(ddp_results):
    for res in ddp_results:
        hist = res['metrics']
        assert len(hist) == 4
        for row in hist: assert abs(row['tv'] - row['mine']) < 1e-6, hist
        # the list state joined over the ranks: every item of the set once (96 training, 64 validation items)
        ys = {ph: C.make_dls().train.dataset.tensors[1] if ph == 'train' else C.make_dls().valid.dataset.tensors[1]
              for ph in ('train', 'valid')}
        assert [row['seen'] for row in hist] == [len(ys[r['phase']]) + 1000*int(ys[r['phase']].sum()) for r in hist]
        assert res['tv_settings'] == {'k': 1, 'average': 'micro', 'num_classes': None}   # settings are not summed
    assert ddp_results[0]['metrics'] == ddp_results[1]['metrics']                      # every rank has the whole set's
