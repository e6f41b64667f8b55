"""Every name the 2022 fast.ai course's `from miniai.<module> import *` provides resolves under the same module here.

The lists are the `__all__` of the course's modules (fastai/course22p2, miniai/*.py, final versions). Where this
project keeps a thing in another module, the course's module re-exports it (noted in that module's notebook)."""
import pytest

COURSE_NAMES = {
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
