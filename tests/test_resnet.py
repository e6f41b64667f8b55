"ResNets (miniai.resnet): block shapes for odd sizes, identity paths, builders, and summary's params/MFLOPs counts."
import pytest, torch
from torch import nn
from miniai.resnet import (ResBlock, PreResBlock, PlainBlock, resnet, get_model, cnn_model, summary, zero_bn,
                           GlobalAvgPool, act_gr, fit_report)
from miniai.learner import Learner

@pytest.mark.parametrize('blk', [ResBlock, PreResBlock])
@pytest.mark.parametrize('h,ho', [(28, 14), (7, 4), (3, 2), (1, 1), (8, 4)])
@pytest.mark.parametrize('ks', [3, 5])
def test_block_odd_sizes(blk, h, ho, ks):
    b = blk(4, 8, stride=2, ks=ks).eval()
    assert b(torch.randn(2, 4, h, h + 1)).shape == (2, 8, ho, (h + 2) // 2)

def test_identity_paths():
    b = ResBlock(6, 6)
    assert isinstance(b.pool, nn.Identity) and isinstance(b.idconv, nn.Identity)
    b = ResBlock(6, 12, stride=2)
    assert isinstance(b.pool, nn.AvgPool2d) and b.pool.ceil_mode and b.idconv[0].kernel_size == (1, 1)
    # the ceil-mode pool averages only real pixels in the last, partial window
    x = torch.arange(9.).reshape(1, 1, 3, 3)
    assert torch.equal(nn.AvgPool2d(2, ceil_mode=True)(x)[0, 0], torch.tensor([[2., 3.5], [6.5, 8.]]))
    with pytest.raises(ValueError, match='stride'): ResBlock(4, 8, stride=0)

def test_zero_bn_makes_identity():
    b = ResBlock(4, 4, act=None); b.apply(zero_bn); b.eval()
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(b(x), x)

def test_builders():
    xb = torch.randn(4, 1, 28, 28)
    for m in [cnn_model(), get_model(), resnet(), resnet(pre=True, depth=2), resnet((8, 16, 32), stem='conv', stride0=2)]:
        assert m(xb).shape == (4, 10)
    assert resnet()(torch.randn(2, 1, 33, 40)).shape == (2, 10)   # pooling head: any size
    with pytest.raises(ValueError, match='head'): resnet(head='max')
    with pytest.raises(ValueError, match='stem'): resnet(stem='x')
    assert GlobalAvgPool()(torch.ones(2, 3, 4, 5)).shape == (2, 3)

def test_summary_hand_count():
    m = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                      nn.Flatten(), nn.Linear(32, 10))
    s = summary(m, torch.randn(3, 1, 8, 8))
    assert s.total_params == sum(p.numel() for p in m.parameters()) == 40 + 296 + 330
    # 36 weights x 4x4 outputs + 288 x 2x2 + 320 = 2048 multiply-accumulates per item
    assert abs(s.total_mflops - 2048e-6) < 1e-12
    assert [r[3] for r in s.rows] == [40, 0, 296, 0, 330]
    assert s.rows[0][1:3] == ((3, 1, 8, 8), (3, 4, 4, 4))
    assert '|Module|Input|Output|Params|MFLOPs|' in s._repr_markdown_()
    assert 'Total params: 666' in repr(s)

def test_summary_nested_counts_each_conv_at_its_own_size():
    b = ResBlock(2, 4, stride=2, act=None, norm=None)
    s = summary(nn.Sequential(b), torch.randn(1, 2, 8, 8))
    # conv1 2->4 at 8x8 (stride 1), conv2 4->4 at 4x4 (stride 2), idconv 1x1 2->4 at 4x4
    assert abs(s.total_mflops - (72*64 + 144*16 + 8*16)/1e6) < 1e-12
    assert s.total_params == sum(p.numel() for p in b.parameters())

def test_summary_restores_mode_and_hooks():
    m = resnet((8, 16)); m.train()
    summary(m, torch.randn(2, 1, 28, 28))
    assert m.training
    assert all(not mod._forward_hooks for mod in m.modules())
    with pytest.raises(TypeError): summary(m, None)

def test_summary_of_learner():
    m = resnet((8, 16))
    dls = [[(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))]] * 2
    s = summary(Learner(m, dls), None)
    assert s.rows[0][1] == (4, 1, 28, 28) and s.total_params == sum(p.numel() for p in m.parameters())

def test_plain_block_is_a_resblock_without_the_shortcut():
    torch.manual_seed(0)
    rb, pb = ResBlock(4, 8, stride=2).eval(), PlainBlock(4, 8, stride=2).eval()
    pb.convs.load_state_dict(rb.convs.state_dict())
    x = torch.randn(2, 4, 7, 7)
    assert pb(x).shape == rb(x).shape == (2, 8, 4, 4)
    assert torch.allclose(pb(x), rb.act(rb.convs(x)))                     # the residual branch alone
    assert torch.allclose(rb(x), rb.act(rb.convs(x) + rb.idconv(rb.pool(x))))

def test_resnet_block_argument():
    kw = dict(nfs=(8, 16, 32), ks0=3, stem='conv', stride0=2, depth=3)
    plain, res = resnet(**kw, block=PlainBlock), resnet(**kw)
    blocks = lambda m, cls: sum(isinstance(l, cls) for l in m.modules())
    assert blocks(plain, PlainBlock) == blocks(res, ResBlock) == 8 and blocks(plain, ResBlock) == 0
    n3 = lambda m: sum(isinstance(l, nn.Conv2d) and l.kernel_size == (3, 3) for l in m.modules())
    assert n3(plain) == n3(res) == 17                                     # the same depth: stem + 2 convs per block
    assert plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)
