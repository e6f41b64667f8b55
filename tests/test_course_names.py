"""Every name the 2022 fast.ai course's `from miniai.<module> import *` provides resolves under the same module here.

The lists are the `__all__` of the course's modules (fastai/course22p2, miniai/*.py, final versions). Where this
project keeps a thing in another module, the course's module re-exports it (noted in that module's notebook)."""
import pytest

COURSE_NAMES = {
    'training': 'accuracy report Dataset fit get_dls',
    'datasets': 'inplace collate_dict show_image subplots get_grid show_images DataLoaders',
    'conv': 'def_device conv to_device collate_device',
    'learner': ('CancelFitException CancelBatchException CancelEpochException Callback run_cbs SingleBatchCB to_cpu '
                'MetricsCB DeviceCB TrainCB ProgressCB with_cbs Learner TrainLearner MomentumLearner LRFinderCB lr_find'),
    'activations': 'set_seed Hook Hooks HooksCallback append_stats get_hist get_min ActivationStats',
    'init': 'clean_ipython_hist clean_tb clean_mem BatchTransformCB GeneralRelu plot_func init_weights lsuv_init conv get_model',
    'sgd': 'BaseSchedCB BatchSchedCB HasLearnCB RecorderCB EpochSchedCB',
    'resnet': 'act_gr ResBlock',
    'augment': 'summary show_image_batch CapturePreds capture_preds rand_erase RandErase rand_copy RandCopy',
    'accel': 'MixedPrecision AccelerateCB',
}


@pytest.mark.parametrize('module', list(COURSE_NAMES))
def test_star_import_gives_the_course_names(module):
    ns = {}
    exec(f'from miniai.{module} import *', ns)   # a fresh namespace, as a student's notebook would have
    missing = [n for n in COURSE_NAMES[module].split() if n not in ns]
    assert not missing, f"`from miniai.{module} import *` lacks the course's {missing}"


def test_course_schedulers_work_from_sgd():
    # the course's 12_accel_sgd cells: a scheduler callback and a recorder, from `miniai.sgd` alone
    ns = {}
    exec('from miniai.sgd import *', ns)
    import torch
    from functools import partial
    from torch.optim import lr_scheduler
    from miniai.learner import Learner, TrainCB
    from miniai.datasets import DataLoaders
    torch.manual_seed(0)
    x = torch.randn(96, 4); y = (x[:, 0] > 0).long()
    dls = DataLoaders.from_tensors(x[:64], y[:64], x[64:], y[64:], bs=16)
    rec = ns['RecorderCB'](lr=lambda cb: cb.pg['lr'])
    sched = ns['BatchSchedCB'](partial(lr_scheduler.CosineAnnealingLR, T_max=4))
    Learner(torch.nn.Linear(4, 2), dls, torch.nn.functional.cross_entropy, lr=0.1, cbs=[TrainCB(), sched, rec]).fit(1)
    assert rec.recs['lr'][0] == pytest.approx(0.1) and rec.recs['lr'][2] == pytest.approx(0.05)


def test_a_learner_has_every_lesson_s_methods_whatever_was_imported(tmp_path):
    "A student's notebook that imports only `miniai.learner` still gets the methods later lessons add to `Learner`."
    import subprocess, sys, textwrap
    script = textwrap.dedent(f'''
        from miniai.learner import *
        import torch, torch.nn.functional as F
        from torch import nn
        x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 2, (32,))
        dls = [[(x[:16], y[:16]), (x[16:], y[16:])], [(x, y)]]
        learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), dls, F.cross_entropy, cbs=[TrainCB()])
        learn.fit(1)
        print(learn.save({str(tmp_path / 'ck.pth')!r}).name)
        missing = [m for m in ('save', 'load', 'capture_preds', 'show_image_batch', 'summary') if not hasattr(learn, m)]
        print('missing:', missing)
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split('\n')[:2] == ['ck.pth', 'missing: []'], out.stdout


def test_the_course_s_minibatch_training_names_train_an_mlp():
    "The course's `miniai.training`: `Dataset`, `get_dls`, `fit`, `accuracy`, `report`, on a problem an MLP can learn."
    import torch
    from torch import nn
    import torch.nn.functional as F
    from miniai.training import Dataset, accuracy, fit, get_dls, report
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 10, generator=g); y = (x[:, 0] + x[:, 1] > 0).long()
    train_ds, valid_ds = Dataset(x[:384], y[:384]), Dataset(x[384:], y[384:])
    assert len(train_ds) == 384 and torch.equal(train_ds[3][0], x[3])
    train_dl, valid_dl = get_dls(train_ds, valid_ds, bs=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 2))
    loss, acc = fit(3, model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.2), train_dl, valid_dl)
    assert acc > 0.9 and loss < 0.4, (loss, acc)
    assert accuracy(torch.tensor([[0., 1.], [1., 0.]]), torch.tensor([1, 1])).item() == 0.5
