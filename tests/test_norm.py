"LayerNorm and BatchNorm from scratch against torch: outputs, running statistics and gradients, train and eval."
import pytest, torch
from torch import nn

from miniai.norm import LayerNorm, BatchNorm
from miniai.datasets import set_seed

TOL = 1e-5


def close(a, b, tol=TOL): return torch.allclose(a, b, atol=tol, rtol=0)


@pytest.mark.parametrize('shape,torch_cls,mom', [((16, 8, 6, 6), nn.BatchNorm2d, 0.1), ((4, 3, 5, 5), nn.BatchNorm2d, 0.5),
                                                  ((32, 10), nn.BatchNorm1d, 0.1), ((8, 6, 12), nn.BatchNorm1d, 0.3)])
def test_batchnorm_matches_torch_train_and_eval(shape, torch_cls, mom):
    set_seed(0)
    nf = shape[1]
    ours, theirs = BatchNorm(nf, mom=mom), torch_cls(nf, momentum=mom)
    with torch.no_grad():
        for p in (ours.mults, theirs.weight): p.copy_(torch.linspace(0.5, 2, nf))
        for p in (ours.adds, theirs.bias): p.copy_(torch.linspace(-1, 1, nf))
    for step in range(5):
        training = step < 3 or step == 4          # train, train, train, eval, train again
        ours.train(training); theirs.train(training)
        x = (torch.randn(shape)*2 + 1).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        out, out2 = ours(x), theirs(x2)
        assert close(out, out2), f'output, step {step}'
        g = torch.randn(shape)
        (out*g).sum().backward(); (out2*g).sum().backward()
        assert close(x.grad, x2.grad), f'input grad, step {step}'
        assert close(ours.mults.grad, theirs.weight.grad, 1e-4) and close(ours.adds.grad, theirs.bias.grad, 1e-4)
        assert close(ours.means, theirs.running_mean) and close(ours.vars, theirs.running_var), f'running stats, step {step}'
        ours.zero_grad(); theirs.zero_grad()


def test_batchnorm_eval_uses_running_stats_and_saves_buffers():
    bn = BatchNorm(3)
    with torch.no_grad(): bn.means.copy_(torch.tensor([1., 2., 3.])); bn.vars.copy_(torch.tensor([4., 4., 4.]))
    bn.eval()
    x = torch.randn(5, 3, 2, 2)
    expected = (x - torch.tensor([1., 2., 3.]).view(1, 3, 1, 1)) / (4 + 1e-5)**0.5
    assert close(bn(x), expected)
    assert close(bn.means, torch.tensor([1., 2., 3.]))       # unchanged in eval
    assert set(bn.state_dict()) == {'mults', 'adds', 'means', 'vars'}
    assert {n for n, _ in bn.named_parameters()} == {'mults', 'adds'}


def test_batchnorm_bad_inputs():
    bn = BatchNorm(3)
    with pytest.raises(ValueError, match=r'\(N, 3, \.\.\.\)'): bn(torch.randn(8, 4, 5, 5))
    with pytest.raises(ValueError, match=r'\(N, 3, \.\.\.\)'): bn(torch.randn(3))
    with pytest.raises(ValueError, match='more than 1 value per channel'): bn(torch.randn(1, 3))
    assert bn.eval()(torch.randn(1, 3)).shape == (1, 3)


def test_batchnorm_batch_of_two_collapses_to_sign():
    set_seed(0)
    y = BatchNorm(5)(torch.randn(2, 5)*10)
    assert close(y.abs(), torch.ones(2, 5), 1e-4)


@pytest.mark.parametrize('shape', [(16, 8, 5, 5), (32, 20), (4, 3, 7)])
def test_layernorm_matches_torch(shape):
    set_seed(0)
    x = (torch.randn(shape)*3 + 2).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    ours, theirs = LayerNorm(shape[1]), nn.LayerNorm(shape[1:])
    with torch.no_grad(): ours.mult.fill_(1.5); ours.add.fill_(-0.3); theirs.weight.fill_(1.5); theirs.bias.fill_(-0.3)
    for training in (True, False):                 # stateless: same in train and eval
        ours.train(training); theirs.train(training)
        out, out2 = ours(x), theirs(x2)
        assert close(out, out2)
    g = torch.randn(shape)
    (out*g).sum().backward(); (out2*g).sum().backward()
    assert close(x.grad, x2.grad)
    # our single mult/add get the sum of torch's per-element gradients
    assert torch.allclose(ours.mult.grad, theirs.weight.grad.sum(), rtol=1e-4, atol=1e-4)
    assert torch.allclose(ours.add.grad, theirs.bias.grad.sum(), rtol=1e-4, atol=1e-4)


def test_layernorm_independent_of_batch_and_bad_input():
    set_seed(0)
    a, b, c = torch.randn(3, 1, 8, 4, 4)
    ln = LayerNorm()
    assert torch.equal(ln(torch.cat([a, b]))[0], ln(torch.cat([a, c]))[0])
    with pytest.raises(ValueError, match='2\\+ dims'): ln(torch.randn(5))
