"""Turn a finished `miniai train --recipe recordN` run into a RESULT line like `bench/flagship.py --record N` prints,
so both kinds of record run sit in one table (`bench/records/runs.jsonl`, read by `nbs/11_augment.ipynb`).

    python bench/record_eval.py runs/record50 [--log bench/records/runs.jsonl]

Reads the run folder's metrics.json (recipe, seed, test accuracy, training seconds) and model.pth, and scores the
model on the 10,000 test images the way flagship.py does, in the precision it was trained in (bf16 + channels-last, or
fp32): plain, flip TTA and 10-view TTA (flips × one-pixel shifts).
"""
import argparse, json, sys
from pathlib import Path
import torch
from torch import nn
from miniai.datasets import fashion_dls
from miniai.learner import Learner, DeviceCB, MetricsCB
from miniai.metrics import Accuracy
from miniai.resnet import summary
from miniai.recipes import record_model
from miniai.accel import precision_cbs, matmul_small_convs
from flagship import config, _tta


def record_result(run_dir):
    "The RESULT dict (flagship.py's keys) of the `miniai train` record run saved in `run_dir`."
    run_dir = Path(run_dir)
    files = [run_dir/'metrics.json', run_dir/'model.pth']
    if missing := [str(f) for f in files if not f.is_file()]:
        sys.exit(f"record_eval: {', '.join(missing)} not found: give the --out folder of a finished `miniai train` run")
    report = json.loads(files[0].read_text())
    if not report['recipe'].startswith('record') or report['subset']:
        sys.exit(f"record_eval: {run_dir} holds a {report['recipe']!r} run (subset {report['subset']}), "
                 "not a full-data record recipe")
    epochs = int(report['recipe'][len('record'):])
    model = record_model(epochs)
    matmul_small_convs(model)
    model.load_state_dict(torch.load(files[1], map_location='cpu'))
    dls = fashion_dls(report['bs'])
    s = summary(model, next(iter(dls.valid))[0][:2])
    metrics = MetricsCB(accuracy=Accuracy())
    precision = report['precision']
    learn = Learner(model, dls, nn.CrossEntropyLoss(), cbs=[*precision_cbs(precision), DeviceCB(), metrics])
    half = precision != 'fp32'   # precision_cbs pairs 16-bit autocast with channels-last
    cfg = config(epochs, {'seed': report['seed'], 'amp': half, 'cl': half})
    train_s = report['train_seconds']
    return {**cfg, 'acc': round(report['test_accuracy'], 4), **_tta(learn, 1), 'train_s': round(train_s),
            'epoch_s': round(train_s / epochs, 1), 'mflops': round(s.total_mflops, 2), 'params': s.total_params,
            'threads': report['cpu_threads'], 'via': f"miniai train --recipe {report['recipe']} --seed {report['seed']}"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run_dir', help="the --out folder of a finished `miniai train --recipe recordN` run")
    p.add_argument('--log', default=None, help="append the RESULT json to this file too")
    args = p.parse_args()
    res = record_result(args.run_dir)
    print('RESULT', json.dumps(res), flush=True)
    if args.log:
        with open(args.log, 'a') as f: f.write(json.dumps(res) + '\n')


if __name__ == '__main__': main()
