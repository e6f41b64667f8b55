"""The exercises' checks (`miniai.exercises`) tested honestly.

- every check passes miniai's own version, and a second, independently written correct version (below: the
  factories called with no mistake), and leaves the random generators and torch's flags as they were;
- every mistake a check names is produced, exactly, by a version written with that mistake (the factories called
  with the mistake's id): a check that passed a wrong version, or named another mistake, fails here;
- a stub answers `not written yet` (body `...`, `None` returned, `NotImplementedError`), an exception in the
  student's code is one line naming it and the line, and solutions mode checks miniai's version in a stub's place;
- every lesson 01-11a ends with a "Your turn" section calling the checks of its exercises, whose stored outputs are
  the stubs' `not written yet` lines, and every hint names a section the lesson has;
- the README's lesson table lists each lesson's exercises.
Each factory below is one student's version of one exercise, written from the lesson, with a switch per mistake.
"""
import functools, json, math, os, random, re, time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from miniai.exercises import EXERCISES, DIAGNOSES, exercise_table, exercises_of
from miniai.checking import is_stub, exercise, solutions_mode
from miniai.callbacks import Callback, CancelBatchException, CancelEpochException, CancelFitException, run_cbs, with_cbs
from miniai.sched import annealer

ROOT = Path(__file__).resolve().parents[1]
# a wrong scheduler callback below steps its scheduler before the optimizer, as torch warns
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")


# ---------------------------------------------------------------- 01_datasets
def collate_(m=None):
    def collate(items):
        xs, ys = [x for x, _ in items], [y for _, y in items]
        if m == 'collate_not_stacked': return xs, ys
        if m == 'collate_cat': return torch.cat(xs), torch.stack(ys)
        xb, yb = torch.stack(xs), torch.stack(ys)
        return (yb, xb) if m == 'collate_swapped' else (xb, yb)
    return collate


def sampler_(m=None):
    class Sampler:
        def __init__(self, n, shuffle=False, generator=None):
            self.n, self.shuffle, self.gen = n, shuffle, generator
            if m == 'sampler_same_every_epoch': self.perm = torch.randperm(n, generator=generator).tolist()
        def __iter__(self):
            if m == 'sampler_shuffles_valid': return iter(torch.randperm(self.n, generator=self.gen).tolist())
            if not self.shuffle or m == 'sampler_not_shuffled': return iter(range(self.n))
            if m == 'sampler_repeats': return iter(torch.randint(0, self.n, (self.n,), generator=self.gen).tolist())
            if m == 'sampler_same_every_epoch': return iter(self.perm)
            if m == 'sampler_ignores_generator': return iter(torch.randperm(self.n).tolist())
            return (int(i) for i in torch.randperm(self.n, generator=self.gen))
    return Sampler


def tbs_(m=None):
    class TensorBatchSampler:
        def __init__(self, n, bs, shuffle=False, drop_last=False, generator=None):
            self.n, self.bs, self.shuffle, self.drop_last, self.g = n, bs, shuffle, drop_last, generator
        def __len__(self):
            if m == 'tbs_len': return math.ceil(self.n/self.bs)
            return self.n//self.bs if self.drop_last else (self.n + self.bs - 1)//self.bs
        def __iter__(self):
            idx = torch.randperm(self.n, generator=self.g).tolist() if self.shuffle else list(range(self.n))
            if m == 'tbs_repeats' and self.shuffle: idx = torch.randint(0, self.n, (self.n,), generator=self.g).tolist()
            batches = [idx[i:i + self.bs] for i in range(0, self.n, self.bs)]
            drop = {'tbs_drops_last': True, 'tbs_keeps_partial': False}.get(m, self.drop_last)
            if batches and len(batches[-1]) < self.bs:
                if m == 'tbs_pads_last': batches[-1] = (batches[-1] + idx)[:self.bs]
                elif drop: batches.pop()
            return iter(torch.tensor(b) for b in batches)
    return TensorBatchSampler


# ---------------------------------------------------------------- 01a_training
def ce_(m=None):
    def cross_entropy(preds, targets):
        if m == 'ce_overflow': lp = (preds.exp()/preds.exp().sum(-1, keepdim=True)).log()
        else:
            dim = 0 if m == 'ce_wrong_dim' else -1
            z = preds - preds.max(dim, keepdim=True).values           # log-sum-exp, shifted by the largest score
            lp = z - z.exp().sum(dim, keepdim=True).log()
        picked = lp[torch.arange(len(targets)), targets]
        loss = picked.sum() if m == 'ce_sum' else picked.mean()
        return loss if m == 'ce_sign' else -loss
    return cross_entropy


def fit_(m=None):
    def fit(epochs, model, loss_func, opt, train_dl, valid_dl):
        for epoch in range(epochs):
            model.train()
            for xb, yb in list(train_dl) + (list(valid_dl) if m == 'fit_trains_on_valid' else []):
                loss_func(model(xb), yb).backward()
                opt.step()
                if m != 'fit_no_zero_grad': opt.zero_grad()
            if m != 'fit_no_eval': model.eval()
            tot_loss = tot_acc = count = 0.
            with torch.no_grad():
                for xb, yb in valid_dl:
                    p, w = model(xb), 1 if m == 'fit_unweighted' else len(yb)
                    tot_loss += loss_func(p, yb).item()*w
                    tot_acc += (p.argmax(-1) == yb).float().mean().item()*w
                    count += w
            print(f"epoch {epoch}: valid loss {tot_loss/count:.3f}, accuracy {tot_acc/count:.3f}")
        return tot_loss/count, tot_acc/count
    return fit


# ---------------------------------------------------------------- 02_conv
def conv2d_(m=None):
    def conv2d(x, w, b=None, stride=1, padding=0):
        if m == 'conv2d_flipped': w = w.flip(-2, -1)
        if m == 'conv2d_no_stride': stride = 1
        if m == 'conv2d_no_padding': padding = 0
        x = F.pad(x, (padding,)*4)
        n, c, h, wd = x.shape
        nf, _, ks, _ = w.shape
        oh, ow = (h - ks)//stride + 1, (wd - ks)//stride + 1
        out = torch.zeros(n, nf, oh, ow)
        for i in range(ks):       # one kernel offset at a time: a (C_out, C_in) matrix on a strided view of the input
            for j in range(ks):
                patch = x[:, :, i:i + stride*(oh - 1) + 1:stride, j:j + stride*(ow - 1) + 1:stride]
                out += torch.einsum('nchw,fc->nfhw', patch, w[:, :, i, j])
        if b is not None and m != 'conv2d_no_bias': out += b[:, None, None]
        return out
    return conv2d


def to_device_(m=None):
    def to_device(x, device):
        if isinstance(x, torch.Tensor): return x.to(device)
        if isinstance(x, dict): return x if m == 'todev_no_dict' else {k: to_device(v, device) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            if m == 'todev_no_nesting': return x
            out = [to_device(o, device) for o in x]
            return out if m == 'todev_tuple_to_list' else type(x)(out)
        return None if m == 'todev_non_tensors' else x
    return to_device


# ---------------------------------------------------------------- 03_metrics
def mean_(m=None):
    class Mean:
        def __init__(self): self.reset()
        def reset(self):
            if m == 'mean_no_reset' and hasattr(self, 'tot'): return
            self.tot, self.n, self.k, self.means = 0., 0., 0, []
        def update(self, value, weight=1):
            v = float(value)
            self.tot, self.n, self.k = self.tot + v*weight, self.n + weight, self.k + 1
            self.means.append(v)
        def compute(self):
            if m == 'mean_unweighted': return sum(self.means)/len(self.means)
            if m == 'mean_sum': return self.tot
            if m == 'mean_per_update': return self.tot/self.k
            return torch.tensor(self.tot/self.n)
    return Mean


def accuracy_(m=None):
    class Accuracy:
        def __init__(self): self.reset()
        def reset(self):
            if m == 'acc_no_reset' and hasattr(self, 'right'): return
            self.right, self.total, self.accs = 0, 0, []
        def update(self, preds, targets):
            hits = preds.argmax(0 if m == 'acc_argmax_dim' else -1) == targets
            if m == 'acc_last_batch': self.right, self.total = 0, 0
            self.right, self.total = self.right + int(hits.sum()), self.total + len(targets)
            self.accs.append(hits.float().mean().item())
        def compute(self): return sum(self.accs)/len(self.accs) if m == 'acc_batch_mean' else self.right/self.total
    return Accuracy


# ---------------------------------------------------------------- 04_callbacks
def run_cbs_(m=None):
    def run_cbs(cbs, method_nm, learn=None):
        key = {'runcbs_unsorted': lambda cb: 0, 'runcbs_descending': lambda cb: -cb.order}.get(m, lambda cb: cb.order)
        for cb in sorted(cbs, key=key):
            f = getattr(cb, method_nm) if m == 'runcbs_missing_method' else getattr(cb, method_nm, None)
            if f is None: continue
            if m == 'runcbs_no_learn': f()
            else: f(learn)
    return run_cbs


def with_cbs_(m=None):
    def with_cbs(nm):
        own = {'fit': CancelFitException, 'epoch': CancelEpochException, 'batch': CancelBatchException}[nm]
        exc = {'withcbs_catches_any_cancel': (CancelFitException, CancelEpochException, CancelBatchException),
               'withcbs_cancel_not_caught': (), 'withcbs_swallows_errors': Exception}.get(m, own)
        def deco(f):
            @functools.wraps(f)
            def inner(o, *args, **kwargs):
                try:
                    o.callback(f'before_{nm}')
                    f(o, *args, **kwargs)
                    if m != 'withcbs_after_on_cancel': o.callback(f'after_{nm}')
                except exc:
                    if m != 'withcbs_no_after_cancel': o.callback(f'after_cancel_{nm}')
                finally:
                    if m == 'withcbs_after_on_cancel': o.callback(f'after_{nm}')
                    if m != 'withcbs_no_cleanup': o.callback(f'cleanup_{nm}')
                if m == 'withcbs_no_cleanup': o.callback(f'cleanup_{nm}')   # not in a finally
            return inner
        return deco
    return with_cbs


# ---------------------------------------------------------------- 05_learner
def traincb_(m=None):
    class TrainCB(Callback):
        def __init__(self, n_inp=1): self.n_inp = 1 if m == 'traincb_n_inp' else n_inp
        def predict(self, learn):
            inputs = learn.batch[:self.n_inp]
            learn.preds = learn.model(*inputs)
        def get_loss(self, learn): learn.loss = learn.loss_func(learn.preds, *learn.batch[self.n_inp:])
        def backward(self, learn):
            if m != 'traincb_no_backward': learn.loss.backward()
        def step(self, learn):
            if m != 'traincb_no_step': learn.opt.step()
        def zero_grad(self, learn):
            if m != 'traincb_no_zero_grad': learn.opt.zero_grad()
    return TrainCB


def learner_(m=None):
    class Learner:
        def __init__(self, model, dls, loss_func, lr, cbs, opt_func=torch.optim.SGD):
            self.model, self.dls, self.loss_func, self.lr, self.cbs, self.opt_func = model, dls, loss_func, lr, cbs, opt_func
        def callback(self, nm): run_cbs(self.cbs, nm, self)
        def fit(self, n_epochs):
            self.opt = self.opt_func(self.model.parameters(), self.lr)
            if m == 'learner_no_cleanup':
                try:
                    self.callback('before_fit'); self.epochs(n_epochs); self.callback('after_fit')
                except CancelFitException: self.callback('after_cancel_fit')
                self.callback('cleanup_fit')   # not in a finally
            elif m == 'learner_swallows_errors':
                try: self._fit(n_epochs)
                except Exception: pass
            else: self._fit(n_epochs)
        @with_cbs('fit')
        def _fit(self, n_epochs): self.epochs(n_epochs)
        def epochs(self, n_epochs):
            for self.epoch in range(n_epochs):
                self.one_epoch(True)
                if m == 'learner_valid_grad': self.one_epoch(False)
                else:
                    with torch.no_grad(): self.one_epoch(False)
        def one_epoch(self, training):
            self.model.train(True if m == 'learner_valid_train_mode' else training)
            self.training, self.dl = training, self.dls.train if training else self.dls.valid
            self._one_epoch()
        @with_cbs('epoch')
        def _one_epoch(self):
            for self.iter, self.batch in enumerate(self.dl):
                if m == 'learner_cancel_batch':   # before/after/cleanup by hand, without catching the Cancel exception
                    try: self.callback('before_batch'); self.steps(); self.callback('after_batch')
                    finally: self.callback('cleanup_batch')
                else: self._one_batch()
        @with_cbs('batch')
        def _one_batch(self): self.steps()
        def steps(self):
            self.callback('predict'); self.callback('after_predict')
            self.callback('get_loss'); self.callback('after_loss')
            if self.training:
                if m == 'learner_events': self.callback('step'); self.callback('after_step')   # step before backward
                self.callback('backward'); self.callback('after_backward')
                if m != 'learner_events': self.callback('step'); self.callback('after_step')
                self.callback('zero_grad')
    return Learner


def skipnf_(m=None):
    class SkipNonFiniteCB(Callback):
        def __init__(self): self.skipped = 0
        def _skip_if_bad(self, learn):
            bad = bool(torch.isnan(learn.loss).any()) if m == 'skipnf_only_nan' else not torch.isfinite(learn.loss).all()
            if not bad: return
            if m != 'skipnf_count_after_batch': self.skipped += 1
            raise (CancelEpochException if m == 'skipnf_cancels_more' else CancelBatchException)()
        def after_loss(self, learn):
            if m not in ('skipnf_too_late', 'skipnf_after_backward'): self._skip_if_bad(learn)
        def after_backward(self, learn):
            if m == 'skipnf_after_backward': self._skip_if_bad(learn)
        def after_step(self, learn):
            if m == 'skipnf_too_late': self._skip_if_bad(learn)
        def after_batch(self, learn):   # never reached by a cancelled batch
            if m == 'skipnf_count_after_batch' and not torch.isfinite(learn.loss).all(): self.skipped += 1
    return SkipNonFiniteCB


# ---------------------------------------------------------------- 05a_checkpoint
def rng_(m=None):
    def rng_states(): return {'py': random.getstate(), 'np': np.random.get_state(), 'torch': torch.get_rng_state()}
    def set_rng_states(d):
        if m != 'rng_no_python': random.setstate(d['py'])
        if m != 'rng_no_numpy': np.random.set_state(d['np'])
        if m != 'rng_no_torch': torch.set_rng_state(d['torch'])
    return rng_states, set_rng_states


def atomic_(m=None):
    def atomic_save(obj, path):
        path = Path(path)
        if m != 'atomic_no_mkdir': path.parent.mkdir(parents=True, exist_ok=True)
        if m == 'atomic_not_atomic': return torch.save(obj, path)
        tmp = path.with_name(path.name + '.partial')
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        finally:
            if m != 'atomic_tmp_left' and tmp.exists(): tmp.unlink()
    return atomic_save


# ---------------------------------------------------------------- 06_activations
def hook_(m=None):
    class Hook:
        def __init__(self, mod, f): self.h = mod.register_forward_hook(f if m == 'hook_args' else partial(f, self))
        def remove(self):
            if m == 'hook_remove': return
            if m == 'hook_remove_twice': self.h.remove(); del self.h; return
            if self.h is not None: self.h.remove(); self.h = None
        def __enter__(self): return self
        def __exit__(self, *exc):
            if m != 'hook_exit': self.remove()
    return Hook


def stats_(m=None):
    def append_stats(hook, mod, inp, outp):
        a = inp[0] if m == 'stats_of_input' else outp
        if not hasattr(hook, 'stats'): hook.stats = ([], [], [])
        if m == 'stats_keeps_graph': mean, std = a.mean(), a.std()
        else: a = a.detach(); mean, std = a.mean().item(), a.std().item()
        hist = (a if m == 'stats_hist_signed' else a.abs()).detach().histc(100 if m == 'stats_hist_bins' else 40, 0, 10)
        for l, v in zip(hook.stats, (mean, std, hist)): l.append(v)
    return append_stats


# ---------------------------------------------------------------- 07_init
def kaiming_(m=None):
    def kaiming_normal_(w, leak=0.):
        rf = math.prod(w.shape[2:])
        fan = {'kaiming_fan_out': w.shape[0]*rf, 'kaiming_no_receptive': w.shape[1]}.get(m, w.shape[1]*rf)
        gain2 = {'kaiming_no_leak': 2., 'kaiming_glorot': 1.}.get(m, 2/(1 + leak**2))
        std = math.sqrt(gain2/fan)
        if m == 'kaiming_uniform': return w.uniform_(-std, std)
        if m == 'kaiming_not_in_place': return torch.randn(w.shape)*std
        return w.normal_(0, std)
    return kaiming_normal_


def grelu_(m=None):
    class GeneralRelu(nn.Module):
        def __init__(self, leak=None, sub=None, maxv=None):
            super().__init__()
            self.leak, self.sub, self.maxv = leak, sub, maxv
        def forward(self, x):
            if m == 'grelu_sub_before' and self.sub: x = x - self.sub
            x = F.leaky_relu(x, self.leak) if self.leak is not None and m != 'grelu_no_leak' else F.relu(x)
            if m == 'grelu_clamp_before_sub' and self.maxv is not None: x = x.clamp(max=self.maxv)
            if self.sub and m != 'grelu_sub_before':
                if m == 'grelu_inplace': x.sub_(self.sub)
                else: x = x - self.sub
            if self.maxv is not None and m != 'grelu_clamp_before_sub': x = torch.minimum(x, torch.tensor(self.maxv))
            return x
    return GeneralRelu


def lsuv_(m=None):
    def lsuv_init(model, mod, xb, m_in, tol=1e-3):
        st = {}
        h = mod.register_forward_hook(lambda module, i, o: st.update(mean=o.mean().item(), std=o.std().item()))
        with torch.no_grad():
            for _ in range(100):
                model(xb)
                if abs(st['std'] - 1) < tol and (abs(st['mean']) < tol or m == 'lsuv_no_bias_shift'): break
                if m != 'lsuv_no_bias_shift': m_in.bias -= st['mean']
                m_in.weight /= st['std']
                if m == 'lsuv_one_pass': break
        if m != 'lsuv_hook_left': h.remove()
        return st['mean'], st['std']
    return lsuv_init


# ---------------------------------------------------------------- 07a_norm
def layernorm_(m=None):
    class LayerNorm(nn.Module):
        def __init__(self, dummy=None, eps=1e-5):
            super().__init__()
            self.eps, self.mult, self.add = eps, nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))
        def forward(self, x):
            dims = (0,) if m == 'layernorm_wrong_dims' else tuple(range(1, x.ndim))
            n = math.prod(x.shape[d] for d in dims)
            mu = x.mean(dims, keepdim=True)
            var = ((x - mu)**2).mean(dims, keepdim=True)
            if m == 'layernorm_unbiased': var = var*n/(n - 1)
            den = var.sqrt() + self.eps if m == 'layernorm_eps_outside' else (var + self.eps).sqrt()
            return (x - mu)/den*self.mult + self.add
    return LayerNorm


def batchnorm_(m=None):
    class BatchNorm(nn.Module):
        def __init__(self, nf, mom=0.1, eps=1e-5):
            super().__init__()
            self.mom, self.eps = mom, eps
            self.mults, self.adds = nn.Parameter(torch.ones(nf, 1, 1)), nn.Parameter(torch.zeros(nf, 1, 1))
            self.register_buffer('means', torch.zeros(1, nf, 1, 1))
            self.register_buffer('vars', torch.ones(1, nf, 1, 1))
        def forward(self, x):
            if (self.training or m == 'batchnorm_updates_in_eval') and m != 'batchnorm_no_running_update':
                mom = 1 - self.mom if m == 'batchnorm_mom_reversed' else self.mom
                with torch.no_grad():
                    self.means.mul_(1 - mom).add_(mom*x.mean((0, 2, 3), keepdim=True))
                    self.vars.mul_(1 - mom).add_(mom*x.var((0, 2, 3), keepdim=True, unbiased=m != 'batchnorm_running_biased'))
            if self.training or m == 'batchnorm_eval_batch_stats':
                dims = (0,) if m == 'batchnorm_wrong_dims' else (0, 2, 3)
                mean, var = x.mean(dims, keepdim=True), x.var(dims, keepdim=True, unbiased=m == 'batchnorm_unbiased')
                if m == 'batchnorm_detached': mean, var = mean.detach(), var.detach()
            else: mean, var = self.means, self.vars
            if m == 'batchnorm_inplace': x = x.sub_(mean)
            else: x = x - mean
            x = x/(var.sqrt() + self.eps if m == 'batchnorm_eps_outside' else (var + self.eps).sqrt())
            return x*self.mults + self.adds
    return BatchNorm


# ---------------------------------------------------------------- 08_sgd_spreadsheet
def deriv_(m=None):
    def derivatives(a, b, x, y):
        e = a*x + b - y
        da, db = (e*x, e) if m == 'deriv_no_factor_2' else (2*e*x, 2*e)
        if m == 'deriv_no_x': da = 2*e
        if m == 'deriv_sign': da, db = -da, -db
        return (db, da) if m == 'deriv_swapped' else (da, db)
    return derivatives


def rms_(m=None):
    def rmsprop_step(g, sqr, sqr_mom=0.99, eps=1e-5):
        if sqr is None: sqr = 0. if m == 'rms_starts_at_zero' else g*g
        sqr = (1 - sqr_mom)*sqr + sqr_mom*g*g if m == 'rms_mom_swapped' else sqr_mom*sqr + (1 - sqr_mom)*g*g
        if m == 'rms_no_sqrt': den = sqr + eps
        elif m == 'rms_eps_inside': den = math.sqrt(sqr + eps)
        else: den = math.sqrt(sqr) + eps
        return g/den, sqr
    return rmsprop_step


# ---------------------------------------------------------------- 08a_sgd
def adam_(m=None):
    class Adam(torch.optim.Optimizer):   # plain tensors, no miniai
        def __init__(self, params, lr, wd=0., beta1=0.9, beta2=0.99, eps=1e-5):
            super().__init__(params, dict(lr=lr, wd=wd, b1=beta1, b2=beta2, eps=eps))
        @torch.no_grad()
        def step(self, closure=None):
            for g in self.param_groups:
                for p in g['params']:
                    if p.grad is None: continue
                    grad = p.grad + g['wd']*p if m == 'adam_l2' else p.grad
                    if m not in ('adam_l2', 'adam_no_wd'): p.mul_(1 - g['lr']*g['wd'])
                    st = self.state[p]
                    if not st: st.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                    if m != 'adam_step_count': st['t'] += 1
                    st['m'] = g['b1']*st['m'] + (1. if m == 'adam_undampened' else 1 - g['b1'])*grad
                    st['v'] = g['b2']*st['v'] + (1 - g['b2'])*grad*grad
                    if m == 'adam_no_debias': mh, vh = st['m'], st['v']
                    else: mh, vh = st['m']/(1 - g['b1']**st['t']), st['v']/(1 - g['b2']**st['t'])
                    if m == 'adam_step_count': st['t'] += 1   # counted after it was used: the first step divides by 0
                    p.sub_(g['lr']*mh/((vh + g['eps']).sqrt() if m == 'adam_eps_inside' else vh.sqrt() + g['eps']))
    return Adam


def generic_(m=None):
    class GenericOptimizer(torch.optim.Optimizer):
        def __init__(self, params, steppers, stats=(), **hypers):
            self.steppers, self.stats = list(steppers), list(stats)
            defaults = {}
            if m != 'generic_defaults_ignored':
                for o in self.stats + self.steppers: defaults.update(getattr(o, 'defaults', {}))
            super().__init__(params, {**hypers, **defaults} if m == 'generic_hypers_lose' else {**defaults, **hypers})
        @torch.no_grad()
        def step(self, closure=None):
            for g in self.param_groups:
                hp = {k: v for k, v in g.items() if k != 'params'}
                for p in g['params']:
                    if p.grad is None: continue
                    first = [] if m == 'generic_l2_late' else [s for s in self.steppers if getattr(s, 'changes_grad', 0)]
                    for s in first: s(p, **hp)
                    st = self.state[p]
                    if not st or m == 'generic_state_reset':
                        for s in self.stats: st.update(s.init_state(p))
                    if m != 'generic_steppers_first':
                        for s in self.stats: s.update(p, st, **hp)
                    for s in self.steppers:
                        if s not in first: s(p, **st, **hp)
                    if m == 'generic_steppers_first':
                        for s in self.stats: s.update(p, st, **hp)
    return GenericOptimizer


# ---------------------------------------------------------------- 08b_schedulers
def cos_(m=None):
    def sched_cos(start, end, pos):
        if m == 'cos_reversed': start, end = end, start
        if m == 'cos_linear': return start + (end - start)*pos
        if m == 'cos_full_period': return start + (end - start)*(1 - math.cos(2*math.pi*pos))/2
        return end + (start - end)*(1 + math.cos(math.pi*pos))/2
    return sched_cos if m == 'cos_not_annealer' else annealer(sched_cos)


def combine_(m=None):
    def combine_scheds(pcts, scheds):
        edges = np.cumsum([0.] + list(pcts))
        def f(pos):
            i = int(np.searchsorted(edges, pos, side='left' if m == 'combine_boundary' else 'right')) - 1
            i = max(i, 0) if m == 'combine_end' else min(max(i, 0), len(scheds) - 1)
            width = edges[i + 1] - edges[i]
            return scheds[i](pos if m == 'combine_global_pos' else (pos - edges[i])/width if width else 1.)
        return f
    return combine_scheds


def onecycle_(m=None):
    def one_cycle_lrs(max_lr, total_steps, pct_start=0.3, div_factor=25., final_div_factor=1e4):
        lo = max_lr/div_factor
        end = lo if m == 'onecycle_final' else lo/final_div_factor
        up = pct_start*total_steps - (0 if m == 'onecycle_boundary' else 1)   # the last warm-up step
        if m == 'onecycle_linear': shape = lambda a, b, t: a + (b - a)*t
        else: shape = lambda a, b, t: b + (a - b)*(1 + math.cos(math.pi*t))/2
        lrs = []
        for i in range(total_steps):
            t = i*(total_steps - 1)/total_steps if m == 'onecycle_pos' else i
            lrs.append(shape(lo, max_lr, t/up) if t <= up else shape(max_lr, end, (t - up)/(total_steps - 1 - up)))
        return lrs
    return one_cycle_lrs


# ---------------------------------------------------------------- 08c_accel_sgd
def smooth_(m=None):
    def smooth(xs, beta=0.98):
        out, avg = [], 0.
        for i, x in enumerate(xs):
            avg = (1 - beta)*avg + beta*x if m == 'smooth_beta_swapped' else beta*avg + (1 - beta)*x
            out.append(avg if m == 'smooth_no_debias' else avg/(1 - beta**(i + (2 if m == 'smooth_debias_index' else 1))))
        return out
    return smooth


def schedcb_(m=None):
    class BatchSchedCB(Callback):
        order = 10
        def __init__(self, sched): self.sched = sched
        def before_fit(self, learn): self.s = self.sched(learn.opt)
        def before_batch(self, learn):
            if m == 'schedcb_steps_early' and learn.training: self.s.step()
        def after_batch(self, learn):
            if m in ('schedcb_steps_early', 'schedcb_per_epoch'): return
            if learn.training or m == 'schedcb_steps_in_valid': self.s.step()
        def after_epoch(self, learn):
            if m == 'schedcb_per_epoch' and learn.training: self.s.step()
    return BatchSchedCB


# ---------------------------------------------------------------- 09_datablock
def compose_(m=None):
    def compose(x, funcs):
        key = (lambda f: f._order) if m == 'compose_no_order' else (lambda f: getattr(f, '_order', 0))
        for f in (list(funcs) if m == 'compose_unsorted' else sorted(funcs, key=key, reverse=m == 'compose_descending')):
            x = f(x)
        return x
    return compose


def gp_(m=None):
    def grandparent_splitter(fn, valid_name='valid', train_name='train'):
        if m == 'gp_fixed_names': valid_name, train_name = 'valid', 'train'
        name = Path(fn).parent.name if m == 'gp_parent' else Path(fn).parent.parent.name
        if name == valid_name: return True
        if name == train_name or m == 'gp_neither_is_train': return False
        return None
    return grandparent_splitter


def split_(m=None):
    def split_by_func(items, f):
        flags = [f(o) for o in items]
        train = [o for o, k in zip(items, flags) if (not k if m == 'split_keeps_none' else k is False)]
        valid = [o for o, k in zip(items, flags) if k is True]
        return (valid, train) if m == 'split_swapped' else (train, valid)
    return split_by_func


def catproc_(m=None):
    class CategoryProcessor:
        def __init__(self): self.vocab = None
        def __call__(self, items):
            if self.vocab is None or m == 'catproc_rebuilds':
                self.vocab = list(dict.fromkeys(items)) if m == 'catproc_unsorted' else sorted(set(items))
            idx = {v: i for i, v in enumerate(self.vocab)}
            if m == 'catproc_unknown_silent': return [idx.get(o, -1) for o in items]
            unknown = [o for o in items if o not in idx]
            if unknown: raise ValueError(f"labels {unknown} are not in the vocab {self.vocab}")
            return [idx[o] for o in items]
    return CategoryProcessor


# ---------------------------------------------------------------- 09a_imagefolders
def folder_(m=None):
    def folder_name(name):
        s = name if m == 'folder_not_lower' else name.lower()
        s = re.sub(r'[^A-Za-z0-9]' if m == 'folder_per_char' else r'[^A-Za-z0-9]+', '_', s)
        return s if m == 'folder_not_stripped' else s.strip('_')
    return folder_name


def ccf_(m=None):
    def check_class_folders(path, splits=('train', 'val')):
        path = Path(path)
        for s in splits:
            if not (path/s).is_dir():
                if m == 'ccf_missing_split': continue
                raise ValueError(f"{path} has no folder {s}")
            if m == 'ccf_empty_class': continue
            for d in sorted((path/s).iterdir()):
                if not d.is_dir() or (d.name.startswith('.') and m != 'ccf_hidden'): continue
                if not any(f.suffix.lower() in ('.png', '.jpg', '.jpeg') for f in d.rglob('*')):
                    raise ValueError(f"the class folder {d} holds no image")
    return check_class_folders


# ---------------------------------------------------------------- 10_resnet
def resblock_(m=None):
    from miniai.resnet import act_gr
    class ResBlock(nn.Module):
        def __init__(self, ni, nf, stride=1, ks=3, act=act_gr, norm=nn.BatchNorm2d):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks//2, bias=False), norm(nf), act())
            self.c2 = nn.Sequential(nn.Conv2d(nf, nf, ks, stride, padding=ks//2, bias=False), norm(nf))
            pool = stride > 1 and m != 'res_strided_idconv'
            self.pool = nn.AvgPool2d(stride, ceil_mode=m != 'res_pool_floor') if pool else nn.Identity()
            self.id = nn.Conv2d(ni, nf, 1, stride=1 if pool else stride) if ni != nf else nn.Identity()
            self.act = act()
        def forward(self, x):
            r = self.c2(self.c1(x))
            if m == 'res_no_identity': return self.act(r)
            i = self.id(self.pool(x))
            if m == 'res_act_before_sum': return self.act(r) + i
            return r + i if m == 'res_no_act' else self.act(r + i)
    return ResBlock


def gap_(m=None):
    class GlobalAvgPool(nn.Module):
        def forward(self, x):
            if m == 'gap_keepdim': return F.adaptive_avg_pool2d(x, 1)
            if m == 'gap_wrong_dims': return x.mean(1)
            if m == 'gap_max': return F.adaptive_max_pool2d(x, 1).flatten(1)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
    return GlobalAvgPool


# ---------------------------------------------------------------- 11_augment
def flip_(m=None):
    def rand_flip(x, p=0.5):
        coin = torch.rand(1).expand(len(x)) if m == 'flip_one_draw' else torch.rand(len(x))
        do = coin > p if m == 'flip_p' else coin < p
        if m == 'flip_inplace':
            x[do] = x[do].flip(-1)
            return x
        return torch.where(do[:, None, None, None], x.flip(-2 if m == 'flip_wrong_axis' else -1), x)
    return rand_flip


def erase_(m=None):
    def rand_erase(x, pct=0.2, max_num=4):
        B, C, H, W = x.shape
        mean, std, lo, hi = x.mean(), x.std(), x.min(), x.max()
        out = x if m == 'erase_inplace' else x.clone()
        h, w = int(round(pct*H)) + (1 if m == 'erase_box_size' else 0), int(round(pct*W)) + (1 if m == 'erase_box_size' else 0)
        shared = torch.randint(0, H - h + 1, (max_num, 2))
        for b in range(B):
            n = max_num if m == 'erase_one_box_per_batch' else int(torch.randint(0, max_num + 1, ()))
            for k in range(n):
                i, j = (shared[k] if m == 'erase_one_box_per_batch' else torch.randint(0, H - h + 1, (2,))).tolist()
                vals = torch.randn(C, h, w)
                if m != 'erase_noise_stats': vals = vals*std + mean
                if m != 'erase_no_clamp': vals = vals.clamp(lo, hi)
                if m == 'erase_constant': vals = torch.zeros(C, h, w)
                out[b, :, i:i + h, j:j + w] = vals
        return out
    return rand_erase


def dropout_(m=None):
    class Dropout(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p
        def forward(self, x):
            if not self.training and m != 'dropout_in_eval': return x
            keep = torch.rand_like(x) > (1 - self.p if m == 'dropout_keep_prob' else self.p)
            return x*keep*{'dropout_no_scale': 1., 'dropout_scale_p': 1/self.p}.get(m, 1/(1 - self.p))
    return Dropout


# ---------------------------------------------------------------- 11a_averaging
def ema_(m=None):
    def ema_step(avg, weights, decay):
        if m == 'ema_not_in_place':
            avg = [decay*a + (1 - decay)*w.detach() for a, w in zip(avg, weights)]
            return avg
        for a, w in zip(avg, weights):
            if m == 'ema_tracks_grad': a.mul_(decay).add_((1 - decay)*w)
            elif m == 'ema_decay_swapped': a.copy_((1 - decay)*a + decay*w.detach())
            else: a.copy_(decay*a + (1 - decay)*w.detach())
    return ema_step


def lookahead_(m=None):
    class LookaheadCB(Callback):
        def __init__(self, k=5, alpha=0.5):
            self.k, self.alpha, self.count = 1 if m == 'lookahead_every_step' else k, alpha, 0
        def before_fit(self, learn): self.slow = [p.detach().clone() for p in learn.model.parameters()]
        def _sync(self, learn):
            a = 1 - self.alpha if m == 'lookahead_alpha_swapped' else self.alpha
            with torch.no_grad():
                for s, p in zip(self.slow, learn.model.parameters()):
                    s += a*(p - s)
                    if m != 'lookahead_no_reset': p.copy_(s)
        def _count(self, learn):
            self.count += 1
            if self.count % self.k == 0: self._sync(learn)
        def after_step(self, learn):
            if m != 'lookahead_counts_valid': self._count(learn)
        def after_batch(self, learn):
            if m == 'lookahead_counts_valid': self._count(learn)
    return LookaheadCB


FACTORIES = {
    'collate': collate_, 'Sampler': sampler_, 'TensorBatchSampler': tbs_, 'cross_entropy': ce_, 'fit': fit_,
    'conv2d': conv2d_, 'to_device': to_device_,
    'Mean': mean_, 'Accuracy': accuracy_, 'run_cbs': run_cbs_, 'with_cbs': with_cbs_, 'TrainCB': traincb_,
    'Learner': learner_, 'SkipNonFiniteCB': skipnf_, 'rng_states': rng_, 'atomic_save': atomic_, 'Hook': hook_,
    'append_stats': stats_, 'kaiming_normal_': kaiming_, 'GeneralRelu': grelu_, 'lsuv_init': lsuv_,
    'LayerNorm': layernorm_, 'BatchNorm': batchnorm_, 'derivatives': deriv_, 'rmsprop_step': rms_, 'Adam': adam_,
    'GenericOptimizer': generic_, 'sched_cos': cos_, 'combine_scheds': combine_, 'one_cycle_lrs': onecycle_,
    'smooth': smooth_, 'BatchSchedCB': schedcb_, 'compose': compose_, 'grandparent_splitter': gp_,
    'split_by_func': split_, 'CategoryProcessor': catproc_, 'folder_name': folder_, 'check_class_folders': ccf_,
    'ResBlock': resblock_, 'GlobalAvgPool': gap_, 'rand_flip': flip_, 'rand_erase': erase_, 'Dropout': dropout_,
    'ema_step': ema_, 'LookaheadCB': lookahead_}


@pytest.fixture(autouse=True)
def _student_mode(monkeypatch):
    "The checks as a student runs them: solutions mode off (tests/test_notebooks.py sets it for the notebooks only)."
    monkeypatch.delenv('MINIAI_SOLUTIONS', raising=False)


def _as_tuple(o): return o if isinstance(o, tuple) else (o,)

def _run(name, impl): return EXERCISES[name].check.run(*_as_tuple(impl))

def _global_state():
    return (torch.get_rng_state().tolist(), random.getstate(), np.random.get_state()[1].tolist(), torch.is_grad_enabled(),
            torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled())


# ---------------------------------------------------------------- the tests
def test_counts():
    lessons = {ex.lesson for ex in EXERCISES.values()}
    assert len(EXERCISES) >= 30 and len(DIAGNOSES) >= 60
    assert lessons == {p.stem for p in _lessons()}
    assert all(2 <= len(exercises_of(l)) <= 4 for l in lessons)
    assert set(FACTORIES) == set(EXERCISES), "every exercise needs a student's version in FACTORIES"


@pytest.fixture(scope='module')
def warm_torch():
    "torch's one-time costs (the optimizers' first import of torch._dynamo, autograd's start), paid before timing checks."
    p = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    (p*p).sum().backward(); opt.step()


@pytest.mark.parametrize('name', list(EXERCISES))
def test_miniai_own_version_passes_and_nothing_is_left_changed(name, warm_torch):
    before = _global_state()
    t = time.perf_counter()
    res = _run(name, EXERCISES[name].reference())
    secs = time.perf_counter() - t
    assert res.ok, str(res)
    assert _global_state() == before, f"{name}'s check left global state changed"
    assert secs < 5, f"{name}'s check took {secs:.1f}s"   # ~0.1 s on an idle 2-core CPU; generous for a shared one


@pytest.mark.parametrize('name', list(EXERCISES))
def test_a_second_correct_version_passes(name):
    res = _run(name, FACTORIES[name]())
    assert res.ok, str(res)


@pytest.mark.parametrize('diagnosis', sorted(DIAGNOSES))
def test_each_mistake_is_named(diagnosis):
    name = DIAGNOSES[diagnosis].name
    res = _run(name, FACTORIES[name](diagnosis))
    assert (res.status, res.diagnosis) == ('fail', diagnosis), f"{diagnosis}: {res}"
    line = str(res)
    assert line.startswith(f"✗ {name}: ") and '\n' not in line and f"(lesson {EXERCISES[name].lesson}" in line


def _stub_like(ref):
    "A stub of the same kind as `ref`: a class whose methods are `...`, or a function whose body is `...`."
    def method(self, *args, **kwargs): ...
    def fn(*args, **kwargs): ...
    if isinstance(ref, type): return type('Stub', (nn.Module,) if issubclass(ref, nn.Module) else (), {'__init__': method,
                                                                                                         'forward': method})
    return fn


@pytest.mark.parametrize('name', list(EXERCISES))
def test_a_stub_is_not_written_yet(name, capsys):
    stubs = tuple(_stub_like(r) for r in _as_tuple(EXERCISES[name].reference()))
    assert all(is_stub(s) for s in stubs)
    res = _run(name, stubs)
    assert res.status == 'todo' and res.message.startswith('not written yet'), str(res)
    EXERCISES[name].check(*stubs)
    assert capsys.readouterr().out == f"… {name}: not written yet: replace the `...` with your code, then run this cell again\n"


def test_returning_none_or_raising_not_implemented_is_not_written_yet():
    def collate(items): xs = [x for x, _ in items]   # forgot the return
    res = _run('collate', collate)
    assert res.status == 'todo' and 'returned None' in res.message, str(res)
    def collate(items): raise NotImplementedError
    assert _run('collate', collate).status == 'todo'
    class Mean:
        def __init__(self): self.total = 0
        def update(self, value, weight=1): ...
        def compute(self): ...
    res = _run('Mean', Mean)
    assert res.status == 'todo' and 'compute' in res.message, str(res)


def test_an_exception_is_one_line_naming_the_students_line():
    def collate(items):
        xs, ys = zip(*items)
        return torch.stack(xs), torch.stack(ys[0])   # ys[0] is a tensor, not a list of them
    res = _run('collate', collate)
    assert res.status == 'fail' and res.diagnosis == 'raised', str(res)
    assert re.search(r"raised TypeError: .* \(in collate, line \d+: `return torch.stack\(xs\), torch.stack\(ys\[0\]\)",
                     res.message) and '\n' not in str(res), str(res)


def test_checks_accept_what_the_lessons_allow():
    "Tensors or floats, lists or tuples, batches as tensors or lists: what a correct student may return."
    assert _run('Mean', mean_()).ok   # compute returns a tensor
    class FloatMean(mean_()):
        def compute(self): return float(super().compute())
    assert _run('Mean', FloatMean).ok
    assert _run('derivatives', lambda a, b, x, y: [2*(a*x + b - y)*x, 2*(a*x + b - y)]).ok
    assert _run('one_cycle_lrs', lambda *a, **k: torch.tensor(onecycle_()(*a, **k))).ok


def test_solutions_mode(monkeypatch, capsys):
    monkeypatch.setenv('MINIAI_SOLUTIONS', '1')
    assert solutions_mode()
    def collate(items): ...
    EXERCISES['collate'].check(collate)
    out = capsys.readouterr().out
    assert out.startswith("✓ collate: matches torch's default_collate") and "solutions mode" in out
    assert not _run('collate', collate_('collate_cat')).ok   # code that is not a stub is checked as usual
    EXERCISES['collate'].check(collate_('collate_cat'))          # ... and a failure there does not raise
    # a check that fails miniai's own version makes the notebook cell fail
    broken = exercise('broken', '11b_checking', None, 1, 'nothing', lambda: (lambda x: x + 1))
    try:
        @broken
        def check_broken(f):
            "Expects 2*x: miniai's `x + 1` fails it."
            if f(3) != 6: raise AssertionError("x + 1 is not 2*x")
            return "fine"
        def f(x): ...
        with pytest.raises(AssertionError, match="miniai's own version fails its check"): check_broken(f)
        monkeypatch.setenv('MINIAI_SOLUTIONS', '0')
        assert not solutions_mode() and check_broken.run(f).status == 'todo'
    finally: EXERCISES.pop('broken', None)


# ---------------------------------------------------------------- the lessons' "Your turn" sections
def _lessons():
    return sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if re.match(r'(0\d|1[01])[a-z]?_', p.name) and
                  p.stem <= '11a_averaging')


def _your_turn(nb):
    cells = nb['cells']
    start = next(i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and
                 ''.join(c['source']).startswith('## Your turn'))
    return cells[start:]


@pytest.mark.parametrize('path', _lessons(), ids=lambda p: p.stem)
def test_every_lesson_ends_with_its_exercises(path):
    nb = json.loads(path.read_text())
    section = _your_turn(nb)
    code = '\n'.join(''.join(c['source']) for c in section if c['cell_type'] == 'code')
    text = '\n'.join(''.join(c['source']) for c in section if c['cell_type'] == 'markdown')
    outs = [''.join(o.get('text', '')) for c in section if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    for ex in exercises_of(path.stem):
        assert re.search(rf"\bcheck_{re.escape(ex.name)}\(", code), f"{path.name}: no call of check_{ex.name}"
        assert f"… {ex.name}: not written yet" in ''.join(outs), f"{path.name}: no stored `not written yet` for {ex.name}"
        assert f"{ex.minutes} minutes" in text, f"{path.name}: {ex.name}'s time is not said"
    assert not any('Traceback' in o or '✗' in o for o in outs)
    headings = {l.lstrip('#').strip() for c in nb['cells'] if c['cell_type'] == 'markdown'
                for l in ''.join(c['source']).splitlines() if l.startswith('#')}
    for ex in exercises_of(path.stem):
        sections = [ex.section] + [s for d in ex.diagnoses.values() if isinstance(d, tuple) for s in d[1:]]
        for s in sections:
            assert s is None or s in headings, f"{ex.name}'s hint names a section {s!r} that {path.name} does not have"


def test_readme_lists_each_lessons_exercises():
    rows = [l for l in (ROOT/'README.md').read_text().splitlines() if l.startswith('| `')]
    header = next(l for l in (ROOT/'README.md').read_text().splitlines() if l.startswith('| notebook'))
    assert 'exercises' in header
    for p in _lessons():
        row = next(r for r in rows if r.startswith(f"| `{p.stem}`"))
        for ex in exercises_of(p.stem): assert f"`{ex.name}`" in row, f"README: {p.stem}'s row lacks {ex.name}"


def test_exercise_table():
    table = exercise_table(['07a_norm'])
    assert table.count('\n') == 1 + len(exercises_of('07a_norm')) and '`BatchNorm`' in table
