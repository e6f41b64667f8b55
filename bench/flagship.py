"""Flagship recipe experiments: train one configuration of the Fashion-MNIST ResNet recipe on the full data and
print one RESULT json line (test accuracy, with TTA, training seconds, seconds per epoch, MFLOPs per image).

    python bench/flagship.py '{"nfs": [16, 32, 64, 128], "epochs": 5}' [--threads 1]

Keys (defaults = the flagship, `miniai.augment.FLAGSHIP`): nfs, ks0, stem, stride0, depth, epochs, bs, lr, wd, ls
(label smoothing), pad (random-crop padding, 0 = none), flip (bool), erase (rand_erase pct, 0 = none), seed.
On an oversubscribed CPU use --threads 1 (two threads were several times slower there).
"""
import argparse, json, time
import torch
from torch import nn
from miniai.datasets import fashion_dls, set_seed
from miniai.resnet import resnet, fit_report
from miniai.augment import FLAGSHIP, RandCrop, RandFlip, RandErase, aug_cb, tta_preds, accuracy


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', nargs='?', default='{}')
    p.add_argument('--threads', type=int, default=0)
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    cfg = {**FLAGSHIP, 'flip': True, 'seed': 42, **json.loads(args.config)}
    set_seed(cfg['seed'])
    dls = fashion_dls(cfg['bs'])
    model = resnet(tuple(cfg['nfs']), ks0=cfg['ks0'], stem=cfg['stem'], stride0=cfg['stride0'], depth=cfg.get('depth', 1))
    tfms = ([RandCrop(pad=cfg['pad'])] if cfg['pad'] else []) + ([RandFlip()] if cfg['flip'] else []) + \
           ([RandErase(pct=cfg['erase'])] if cfg['erase'] else [])
    t = time.perf_counter()
    r = fit_report(model, dls, epochs=cfg['epochs'], lr=cfg['lr'], wd=cfg['wd'],
                   loss_func=nn.CrossEntropyLoss(label_smoothing=cfg['label_smoothing']),
                   cbs=[aug_cb(*tfms)] if tfms else [])
    train_s = time.perf_counter() - t
    probs, targs = tta_preds(r['learn'])
    print('RESULT', json.dumps({**cfg, 'acc': r['acc'], 'tta_acc': round(accuracy(probs, targs), 4),
                                'train_s': round(train_s), 'epoch_s': r['epoch_s'], 'mflops': r['mflops'],
                                'threads': torch.get_num_threads()}), flush=True)


if __name__ == '__main__': main()
