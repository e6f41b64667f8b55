"""Flagship recipe experiments: train one configuration of the Fashion-MNIST ResNet recipe on the full data and
print one RESULT json line (test accuracy, with TTA, training seconds, seconds per epoch, MFLOPs per image).

    python bench/flagship.py '{"nfs": [16, 32, 64, 128], "epochs": 5}' [--threads 1] [--log runs.jsonl]
    python bench/flagship.py --record 20 '{"seed": 1}'      # an accuracy-record recipe (miniai.recipes.RECORDS)

Keys (defaults = the flagship, `miniai.recipes.FLAGSHIP`, built in the augmentation lesson): nfs, ks0, stem, stride0, depth, head, epochs, bs, lr, wd,
label_smoothing, pad (random-crop padding, 0 = none), flip (bool), erase (rand_erase pct, 0 = none), erase_max,
amp (bf16 autocast on CPU / fp16 on CUDA), cl (channels-last memory format), opt ('adamw' or 'sgd': Nesterov
momentum 0.9), ema (EMA decay of the weights, 0 = none), zero_bn (start each ResBlock as an identity: `zero_bn`),
beta2 (AdamW's second-moment decay, torch's 0.999 by default; beta1 is cycled by the one-cycle schedule), mm (convs on
small maps as im2col matmuls, default true), n_train (first N training images; quick checks), seed.
On an oversubscribed CPU use --threads 1 (two threads were several times slower there).
"""
import argparse, json, time
from functools import partial
import torch
from torch import nn
from miniai.datasets import fashion_dls, set_seed
from miniai.learner import Learner, TrainCB, DeviceCB, MetricsCB
from miniai.metrics import Accuracy
from miniai.resnet import resnet, summary, zero_bn
from miniai.augment import RandCrop, RandFlip, RandErase, aug_cb, hflip, tta_preds, accuracy
from miniai.recipes import FLAGSHIP, RECORDS
from miniai.sched import OneCycleCB
from miniai.averaging import EMACB
from miniai.accel import MixedPrecision, ChannelsLastCB, matmul_small_convs, resolve_precision
from miniai.conv import def_device
from miniai.callbacks import Callback


class EpochTimer(Callback):
    "Print each epoch phase's wall time as it ends (long runs are watched through their logs)."
    def before_epoch(self, learn): self.t = time.perf_counter()
    def after_epoch(self, learn):
        print(f"epoch {learn.epoch} {'train' if learn.training else 'valid'}: {time.perf_counter() - self.t:.0f} s", flush=True)


def _opt(cfg):
    if cfg['opt'] == 'adamw': return partial(torch.optim.AdamW, weight_decay=cfg['wd'], betas=(0.9, cfg['beta2']))
    if cfg['opt'] == 'sgd': return partial(torch.optim.SGD, momentum=0.9, nesterov=True, weight_decay=cfg['wd'])
    raise ValueError(f"opt must be 'adamw' or 'sgd', got {cfg['opt']!r}")


def _shift(x, dy, dx):
    "Translate batch `x` by (dy, dx) pixels, filling with the border's values."
    p = max(abs(dy), abs(dx))
    H, W = x.shape[-2:]
    xp = nn.functional.pad(x, (p,) * 4, mode='replicate')
    return xp[..., p - dy:p - dy + H, p - dx:p - dx + W]


def _tta(learn, shift):
    "Accuracy of softmax predictions averaged over flips (`tta_acc`) and, if `shift`, also ±`shift`-pixel moves."
    moves = [partial(lambda x, d, fl: _shift(x.flip(-1) if fl else x, *d), d=d, fl=fl)
             for d in ((0, shift), (0, -shift), (shift, 0), (-shift, 0)) for fl in (False, True)] if shift else []
    _, t, views = tta_preds(learn, tfms=[hflip, *moves], keep_views=True)   # views: plain, flipped, then the moves
    out = {'tta_acc': round(accuracy(views[:2].mean(0), t), 4)}
    if shift: out['tta10_acc'] = round(accuracy(views.mean(0), t), 4)
    return out


def _fast_amp():
    "16-bit autocast only where the hardware runs it natively (a CPU without AVX512-bf16/AMX emulates bf16, several times slower)."
    return resolve_precision('auto', def_device) != 'fp32'


def config(record=None, overrides=None):
    "The settings of a run: the flagship's, or the `record`-epoch recipe's (16-bit where fast, channels-last, 10-view TTA), updated by `overrides`."
    return {**FLAGSHIP, 'flip': True, 'seed': 42, 'head': 'pool', 'depth': 1, 'erase_max': 4, 'amp': False, 'cl': False,
            'opt': 'adamw', 'ema': 0., 'mm': True, 'n_train': None, 'tta_shift': 0, 'pct_start': 0.25, 'drop': 0.,
            'zero_bn': False, 'beta2': 0.999,
            **({**RECORDS[record], 'amp': _fast_amp(), 'cl': True, 'tta_shift': 1} if record else {}), **(overrides or {})}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', nargs='?', default='{}')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--record', type=int, default=None, choices=sorted(RECORDS),
                   help="start from the record recipe for this many epochs (bf16 where the CPU has it natively, channels-last, 10-view TTA too)")
    p.add_argument('--log', default=None, help="append the RESULT json to this file too")
    p.add_argument('--save', default=None, help="save the trained model's state_dict (and the config) to this file")
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    cfg = config(args.record, json.loads(args.config))
    set_seed(cfg['seed'])
    dls = fashion_dls(cfg['bs'], n_train=cfg['n_train'])
    model = resnet(tuple(cfg['nfs']), ks0=cfg['ks0'], stem=cfg['stem'], stride0=cfg['stride0'], depth=cfg['depth'],
                   head=cfg['head'], drop=cfg['drop'])
    if cfg['zero_bn']: model.apply(zero_bn)
    if cfg['mm']: matmul_small_convs(model)   # im2col + matmul for <= 4x4 maps: same results, faster on the CPU
    tfms = ([RandCrop(pad=cfg['pad'])] if cfg['pad'] else []) + ([RandFlip()] if cfg['flip'] else []) + \
           ([RandErase(pct=cfg['erase'], max_num=cfg['erase_max'])] if cfg['erase'] else [])
    s = summary(model, next(iter(dls.valid))[0][:2])
    metrics = MetricsCB(accuracy=Accuracy())
    cbs = [MixedPrecision() if cfg['amp'] else TrainCB(), DeviceCB(), metrics, OneCycleCB(cfg['lr'], pct_start=cfg['pct_start']), EpochTimer()]
    if cfg['cl']: cbs.append(ChannelsLastCB())
    if tfms: cbs.append(aug_cb(*tfms))
    if cfg['ema']: cbs.append(EMACB(cfg['ema']))
    learn = Learner(model, dls, nn.CrossEntropyLoss(label_smoothing=cfg['label_smoothing']), lr=cfg['lr'],
                    opt_func=_opt(cfg), cbs=cbs)
    t = time.perf_counter()
    learn.fit(cfg['epochs'])
    train_s = time.perf_counter() - t
    acc = metrics.last('valid')['accuracy']
    if cfg['ema']: cbs[-1].copy_to(learn.model)
    res = {**cfg, 'acc': round(acc, 4), **_tta(learn, cfg['tta_shift']), 'train_s': round(train_s),
           'epoch_s': round(train_s / cfg['epochs'], 1), 'mflops': round(s.total_mflops, 2), 'params': s.total_params,
           'threads': torch.get_num_threads()}
    print('RESULT', json.dumps(res), flush=True)
    if args.save: torch.save({'config': cfg, 'model': learn.model.state_dict()}, args.save)
    if args.log:
        with open(args.log, 'a') as f: f.write(json.dumps(res) + '\n')


if __name__ == '__main__': main()
