import pytest
import torch
from torch import nn

from edrepro import nets


def test_toy_energy_net_has_paper_parameter_count():
    net = nets.toy_energy_net()
    # 2·128+128 + 3·(128·128+128) + 128+1
    assert nets.count_parameters(net) == 50_049
    assert sum(isinstance(m, nn.Softplus) for m in net.modules()) == 4
    assert nets.count_parameters(nets.toy_energy_net(dim=3)) == 50_049 + 128


def test_tiny_silu_net_has_13_parameters():
    net = nets.tiny_silu_net()
    assert nets.count_parameters(net) == 13
    assert sum(isinstance(m, nn.SiLU) for m in net.modules()) == 2
    assert net(torch.zeros(7, 1)).shape == (7,)


@pytest.mark.parametrize("activation, cls", [("softplus", nn.Softplus), ("silu", nn.SiLU), ("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("elu", nn.ELU)])
def test_mlp_shapes_and_activation(activation, cls):
    net = nets.MLP(3, [5, 4], activation=activation)
    assert net(torch.randn(6, 3)).shape == (6,)
    assert sum(isinstance(m, cls) for m in net.modules()) == 2
    multi = nets.MLP(3, [5], out_dim=2, activation=activation)
    assert multi(torch.randn(6, 3)).shape == (6, 2)


def test_mlp_computes_the_layer_composition():
    net = nets.MLP(2, [3], activation="relu")
    x = torch.randn(4, 2)
    l1, l2 = net.net[0], net.net[2]
    torch.testing.assert_close(net(x), (torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)[:, 0])
    assert nets.MLP(1, [], activation="relu").net[0].in_features == 1  # no hidden layer: linear


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="activation") as info:
        nets.MLP(2, [4], activation="tanh")
    assert "softplus" in str(info.value) and "elu" in str(info.value)
    with pytest.raises(ValueError, match=r"hidden\[1\]"):
        nets.MLP(2, [4, 0])
    with pytest.raises(ValueError, match="hidden"):
        nets.MLP(2, 4)
    with pytest.raises(ValueError, match="in_dim"):
        nets.MLP(0, [4])
    with pytest.raises(ValueError, match="x"):
        nets.MLP(2, [4])(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="dim"):
        nets.toy_energy_net(dim=0)


def test_ema_update_is_convex_combination():
    torch.manual_seed(0)
    model = nets.MLP(2, [4])
    ema = nets.EMA(model, decay=0.9)
    old = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model)
    for s, o, p in zip(ema.model.parameters(), old, model.parameters()):
        torch.testing.assert_close(s, 0.9 * o + 0.1 * p.detach())
        assert not s.requires_grad
    assert ema.model(torch.zeros(3, 2)).shape == (3,)


def test_ema_decay_zero_copies_and_one_freezes():
    model = nets.MLP(2, [4])
    copy_ema, frozen = nets.EMA(model, 0.0), nets.EMA(model, 1.0)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    copy_ema.update(model)
    frozen.update(model)
    for c, f, b, p in zip(copy_ema.model.parameters(), frozen.model.parameters(), before, model.parameters()):
        assert torch.equal(c, p) and torch.equal(f, b)


def test_ema_state_dict_round_trip():
    model = nets.MLP(2, [4])
    ema = nets.EMA(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    other = nets.EMA(nets.MLP(2, [4]), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5
    for a, b in zip(ema.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    loaded = [p.detach().clone() for p in other.model.parameters()]
    other.update(model)  # the loaded copy keeps averaging in place
    for a, o, p in zip(other.model.parameters(), loaded, model.parameters()):
        torch.testing.assert_close(a, 0.5 * o + 0.5 * p.detach())


def test_ema_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        nets.EMA(nets.MLP(2, [4]), decay=1.5)
    with pytest.raises(ValueError, match="model"):
        nets.EMA("net")
    with pytest.raises(ValueError, match="shapes"):
        nets.EMA(nets.MLP(2, [4])).update(nets.MLP(2, [5]))
