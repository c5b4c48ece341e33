import functools
import inspect
import subprocess
import sys

import pytest
import torch

from rsa_lightning.layers.conv import SpaceTimeConv, SpatialConv
from rsa_lightning.layers.shift import TemporalShift
from rsa_lightning.models import BasicBlock, DropPath, ResNet, create_resnet, load_imagenet_weights

TINY = dict(num_classes=5, block_counts=(1, 2), widths=(8, 16), expansion=2, stem_width=8)


def test_shapes_and_positions():
    net = ResNet(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[0], [1]])
    assert isinstance(net.layer1[0].conv2, SpaceTimeConv)
    assert isinstance(net.layer2[0].conv2, SpatialConv) and isinstance(net.layer2[1].conv2, SpaceTimeConv)
    x = torch.randn(2, 3, 4, 32, 32)
    assert net(x).shape == (2, 5)
    assert net.forward_features(x).shape == (2, 32, 4, 4, 4)  # time kept, space /8
    # zero-initialised last BN of every block
    assert all(int(torch.count_nonzero(b.bn3.weight.detach())) == 0 for b in [*net.layer1, *net.layer2])
    ones = ResNet(**TINY, zero_init_residual=False)
    assert all(bool((b.bn3.weight == 1).all()) for b in [*ones.layer1, *ones.layer2])


def test_framewise_network_ignores_frame_order_and_spacetime_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 32, 32)
    perm = torch.tensor([4, 2, 0, 3, 1])
    for stmixer, positions, invariant in [(None, [], True), (SpaceTimeConv, [[0], [0, 1]], False)]:
        net = ResNet(**TINY, stmixer=stmixer, stmixer_positions=positions).eval()
        for m in net.modules():  # undo the zero-init so that every block contributes
            if hasattr(m, "bn3"):
                torch.nn.init.ones_(m.bn3.weight)
        with torch.no_grad():
            same = torch.allclose(net(x), net(x[:, :, perm]), atol=1e-5)
        assert same == invariant


def test_gradients_reach_every_parameter():
    net = ResNet(**TINY, stmixer=functools.partial(SpaceTimeConv, kernel_size=(3, 1, 1)), stmixer_positions=[[0], []])
    for m in net.modules():
        if hasattr(m, "bn3"):
            torch.nn.init.ones_(m.bn3.weight)
    net(torch.randn(2, 3, 3, 32, 32)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_stochastic_depth_schedule_and_scaling():
    net = ResNet(**{**TINY, "block_counts": (2, 3)}, drop_path_rate=0.2)
    survival = [b.drop_path.survival for b in [*net.layer1, *net.layer2]]
    assert survival == pytest.approx([1.0, 0.95, 0.9, 0.85, 0.8])
    dp = DropPath(0.5).train()
    torch.manual_seed(0)
    y = dp(torch.ones(4000, 3))
    assert set(y[:, 0].unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/p
    assert (y == y[:, :1]).all()  # per sample
    assert y.mean().item() == pytest.approx(1.0, abs=0.06)
    assert torch.equal(dp.eval()(torch.ones(3, 3)), torch.ones(3, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stmixer": SpaceTimeConv, "stmixer_positions": [[0]]}, "one list per stage"),
        ({"stmixer": SpaceTimeConv, "stmixer_positions": [[0], [2]]}, r"stmixer_positions\[1\]"),
        ({"widths": (8,)}, "same length"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"checkpoint_mixers": "maybe"}, "checkpoint_mixers must be True or False"),
        ({"channels_last": 1}, "channels_last must be True or False"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**{**TINY, **kwargs})


def test_input_layout_is_checked():
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        ResNet(**TINY)(torch.randn(2, 4, 3, 32, 32))


def randomise_norms(net: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (incl. the zero-initialised last gamma of every block)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def test_basic_block_resnet():
    net = ResNet(**{**TINY, "expansion": 1}, block=BasicBlock, stmixer=SpaceTimeConv, stmixer_positions=[[0], [1]])
    assert isinstance(net.layer1[0].conv2, SpaceTimeConv) and isinstance(net.layer2[0].conv1, SpatialConv)
    assert net.layer2[0].conv1.stride == (1, 2, 2) and net.layer2[0].conv2.stride == (1, 1, 1)
    assert all(int(torch.count_nonzero(b.bn2.weight.detach())) == 0 for b in net.blocks())
    assert net.stmixer_blocks == ["layer1.0", "layer2.1"]
    x = torch.randn(2, 3, 4, 32, 32)
    assert net(x).shape == (2, 5) and net.forward_features(x).shape == (2, 16, 4, 4, 4)
    with pytest.raises(ValueError, match="expansion 1"):
        ResNet(**TINY, block=BasicBlock)


def test_resnet18_and_50_have_torchvision_parameter_counts():
    """torchvision's ResNet-18/50 (1000 classes) have 11,689,512 and 25,557,032 parameters."""
    r18 = ResNet(num_classes=1000, block=BasicBlock, block_counts=(2, 2, 2, 2), expansion=1)
    r50 = ResNet(num_classes=1000)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032


def test_temporal_shift_moves_one_eighth_each_way():
    x = torch.arange(2 * 16 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 16, 3, 1, 1) + 1
    y = TemporalShift(channels=16, fold_div=8)(x)
    # channels 0-1: frame t <- t + 1 (last frame zero); 2-3: frame t <- t - 1 (first frame zero); 4-15 unchanged
    assert torch.equal(y[:, :2, :2], x[:, :2, 1:]) and not y[:, :2, 2].any()
    assert torch.equal(y[:, 2:4, 1:], x[:, 2:4, :2]) and not y[:, 2:4, 0].any()
    assert torch.equal(y[:, 4:], x[:, 4:])
    with pytest.raises(ValueError, match="no channel"):
        TemporalShift(channels=4, fold_div=8)
    with pytest.raises(ValueError, match=r"\(B, 16, T, H, W\)"):
        TemporalShift(channels=16)(torch.randn(1, 8, 2, 1, 1))


def test_tsm_mixes_time_with_no_extra_parameters():
    torch.manual_seed(0)
    tsn = ResNet(**TINY)
    tsm = ResNet(**TINY, temporal_shift=functools.partial(TemporalShift, fold_div=4))
    assert sum(p.numel() for p in tsn.parameters()) == sum(p.numel() for p in tsm.parameters())
    tsm.load_state_dict(tsn.state_dict())
    randomise_norms(tsm)
    tsm.eval()
    x = torch.randn(2, 3, 5, 32, 32)
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        assert not torch.allclose(tsm(x), tsm(x[:, :, perm]), atol=1e-5)
        # with the shift switched off (fold 0 of the channels) it is the frame-wise TSN again
        for block in tsm.blocks():
            block.shift = torch.nn.Identity()
        assert torch.allclose(tsm(x), tsm(x[:, :, perm]), atol=1e-5)


def torchvision_state_dict(net: ResNet, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """``net``'s weights in torchvision's layout: 2D kernels, a 1000-class fc."""
    sd = {k: (v.squeeze(2) if v.dim() == 5 else v).clone() for k, v in net.state_dict().items()}
    sd["fc.weight"] = torch.randn(num_classes, net.num_features)
    sd["fc.bias"] = torch.randn(num_classes)
    return sd


def test_imagenet_init_inflates_and_leaves_mixer_blocks_random(tmp_path, caplog):
    torch.manual_seed(0)
    source = ResNet(**TINY)
    randomise_norms(source)
    path = tmp_path / "resnet.pth"
    torch_state = torchvision_state_dict(source)
    torch.save(torch_state, path)
    net = ResNet(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[], [1]])
    assert load_imagenet_weights(net, path) is net
    fresh = ResNet(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[], [1]])
    own = net.state_dict()
    for key, value in own.items():
        if key.startswith("layer2.1.") or key.startswith("fc."):
            continue
        assert torch.equal(value, torch_state[key].view_as(value)), key
    assert own["conv1.weight"].shape == (8, 3, 1, 7, 7)
    # the space-time block keeps its fresh initialisation statistics and starts as the identity
    assert torch.equal(own["layer2.1.bn1.running_var"], torch.ones(16))
    assert not torch.equal(own["layer2.1.conv1.weight"].flatten(), torch_state["layer2.1.conv1.weight"].flatten())
    assert not own["layer2.1.bn3.weight"].any()
    assert own["fc.weight"].shape == fresh.state_dict()["fc.weight"].shape
    assert not torch.equal(own["fc.weight"][:5], torch_state["fc.weight"][:5])

    del torch_state["layer1.0.bn1.running_mean"]
    torch_state["extra.weight"] = torch.zeros(1)
    torch.save(torch_state, path)
    with caplog.at_level("WARNING"):
        load_imagenet_weights(ResNet(**TINY), path)
    assert "layer1.0.bn1.running_mean" in caplog.text and "extra.weight" in caplog.text


def test_imagenet_init_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_imagenet_weights(ResNet(**TINY), tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_resnet(**TINY, pretrained=str(tmp_path / "nope.pth"))
    wide = ResNet(**{**TINY, "widths": (8, 32)})
    torch.save({"state_dict": torchvision_state_dict(wide)}, tmp_path / "wide.pth")
    net = ResNet(**TINY)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"'layer2.0.conv1.weight' has shape \(32, 16, 1, 1\)"):
        load_imagenet_weights(net, tmp_path / "wide.pth")
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # a failed load changes nothing
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of its keys"):
        create_resnet(**TINY, pretrained=str(tmp_path / "other.pth"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="is not a state dict"):
        load_imagenet_weights(ResNet(**TINY), tmp_path / "list.pth")


def test_construction_reads_no_file(monkeypatch):
    assert "pretrained" not in inspect.signature(ResNet).parameters
    with pytest.raises(TypeError, match="pretrained"):
        ResNet(**TINY, pretrained="resnet.pth")

    def no_file(*args, **kwargs):
        raise AssertionError(f"a file was opened: {args}")

    monkeypatch.setattr(torch, "load", no_file)
    monkeypatch.setattr("builtins.open", no_file)
    ResNet(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[0], [1]])
    create_resnet(**TINY, pretrained=None)


def test_create_resnet_builds_then_loads_imagenet_weights(tmp_path):
    torch.manual_seed(0)
    source = ResNet(**TINY)
    randomise_norms(source)
    path = tmp_path / "resnet.pth"
    torch.save(torchvision_state_dict(source), path)
    kwargs = dict(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[0], []])
    torch.manual_seed(1)
    built = create_resnet(**kwargs, pretrained=str(path))
    torch.manual_seed(1)
    loaded = load_imagenet_weights(ResNet(**kwargs), path)
    torch.manual_seed(1)
    scratch = create_resnet(**kwargs)
    assert type(built) is ResNet and built.stmixer_blocks == ["layer1.0"]
    assert built.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in built.state_dict().items())
    assert not torch.equal(built.state_dict()["layer2.0.bn1.weight"], scratch.state_dict()["layer2.0.bn1.weight"])
    # a misspelt ResNet argument fails at construction, before any file is read
    with pytest.raises(TypeError, match="stmixer_position"):
        create_resnet(**TINY, stmixer_position=[[0], []], pretrained=str(tmp_path / "nope.pth"))


def test_resnet_module_does_not_import_weight_loading():
    """models/ has no import circle: resnet.py, loaded without the package __init__, pulls in no other models module."""
    code = """
import pathlib, sys, types
import rsa_lightning
package = types.ModuleType("rsa_lightning.models")  # skip models/__init__.py, which imports every module
package.__path__ = [str(pathlib.Path(rsa_lightning.__file__).parent / "models")]
sys.modules["rsa_lightning.models"] = package
import rsa_lightning.models.resnet
print(sorted(m for m in sys.modules if m.startswith("rsa_lightning.models.")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "['rsa_lightning.models.resnet']"


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_checkpoint_mixers_gives_the_same_results_and_keeps_less(block):
    """Activation checkpointing of the RSA layers: same logits, same gradients for every parameter and the input,
    fewer bytes kept for backward; in eval (no autograd recording) nothing changes."""
    from rsa_lightning.layers import RelationalSelfAttention
    from rsa_lightning.utils.memory import saved_tensor_bytes

    kwargs = dict(TINY, expansion=1, widths=(16, 16)) if block == "basic" else dict(TINY)
    if block == "basic":
        kwargs["block"] = BasicBlock
    rsa = functools.partial(RelationalSelfAttention, num_heads=2, kernel_size=(3, 3, 3))
    nets = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        nets[recompute] = ResNet(**kwargs, stmixer=rsa, stmixer_positions=[[0], [1]], checkpoint_mixers=recompute)
        for m in nets[recompute].modules():  # every block contributes
            for bn in ("bn2", "bn3"):
                if hasattr(m, bn) and not (block == "bottleneck" and bn == "bn2"):
                    torch.nn.init.ones_(getattr(m, bn).weight)
    assert [b.checkpoint_mixer for b in nets[True].blocks()] == [True, False, True]
    x = torch.randn(2, 3, 4, 32, 32)
    grads, logits = {}, {}
    for recompute, net in nets.items():
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)  # same dropout masks
        logits[recompute] = net(xi)
        logits[recompute].square().sum().backward()
        grads[recompute] = [xi.grad] + [p.grad for p in net.parameters()]
    torch.testing.assert_close(logits[True], logits[False], rtol=0, atol=0)
    for with_, without in zip(grads[True], grads[False]):
        torch.testing.assert_close(with_, without, rtol=1e-6, atol=1e-7)
    saved = {
        recompute: saved_tensor_bytes(lambda net=net: net(x.clone().requires_grad_()), exclude=net.parameters())
        for recompute, net in nets.items()
    }
    assert saved[True] < saved[False]


@pytest.mark.parametrize("with_rsa", [False, True])
def test_channels_last_computes_the_same_function_in_channels_last_memory(with_rsa):
    """channels_last=True: weights and activations in channels-last 3-D memory, the logits and every gradient of the
    contiguous network (same weights) up to fp32 summation order; the weights load from a contiguous state dict."""
    from rsa_lightning.layers import RelationalSelfAttention

    mixer = dict(stmixer=functools.partial(RelationalSelfAttention, num_heads=2, kernel_size=(3, 3, 3)))
    kwargs = dict(TINY, **mixer, stmixer_positions=[[0], [1]]) if with_rsa else dict(TINY)
    torch.manual_seed(0)
    plain = ResNet(**kwargs).eval()
    fast = ResNet(**kwargs, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not fast.conv1.weight.is_contiguous()
    seen = []
    fast.layer1[0].conv3.register_forward_hook(lambda module, args, out: seen.append(out))
    x = torch.randn(2, 3, 4, 32, 32)
    outputs, grads = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # with one thread torch runs Conv3d natively: contiguous outputs (2.13)
    try:
        for name, net in (("plain", plain), ("fast", fast)):
            xi = x.clone().requires_grad_()
            outputs[name] = net(xi)
            outputs[name].square().sum().backward()
            grads[name] = [xi.grad] + [p.grad for p in net.parameters()]
    finally:
        torch.set_num_threads(threads)
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d) and not seen[0].is_contiguous()
    torch.testing.assert_close(outputs["fast"], outputs["plain"], rtol=1e-5, atol=1e-6)
    for fast_grad, plain_grad in zip(grads["fast"], grads["plain"]):
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-6)
