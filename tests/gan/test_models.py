import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.testing import assert_close

from gan.config import TrainConfig
from gan.models import Discriminator, Generator, build_models

IMAGE_SHAPES = [(1, 28, 28), (1, 32, 32), (3, 32, 32), (3, 28, 28)]
K = 10  # classes
B = 3  # batch


def make(shape, num_classes=K, seed=0, **overrides):
    cfg = TrainConfig(**{"width": 8, **overrides})
    torch.manual_seed(seed)
    return build_models(cfg, shape, num_classes)


def batch(G: Generator, n: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, G.latent_dim, generator=gen), torch.arange(n) % K


def linears(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


# Every architecture with every data shape it takes (dcgan on points: see further down).
ARCH_SHAPES = [("mlp", s) for s in [*IMAGE_SHAPES, (2,)]] + [("dcgan", s) for s in IMAGE_SHAPES]


@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
@pytest.mark.parametrize(("arch", "shape"), ARCH_SHAPES, ids=str)
def test_shapes_and_ranges(arch, shape, conditional):
    G, D = make(shape, arch=arch, conditional=conditional)
    assert (G.shape, G.latent_dim, G.num_classes) == (shape, 100, 0 if conditional == "none" else K)
    z, y = batch(G)
    x = G(z, y)
    assert x.shape == (B, *shape) and x.dtype == torch.float32 and x.isfinite().all()
    if len(shape) == 3:
        assert x.abs().max() <= 1  # Tanh
    logits, class_logits = D(x, y)
    assert logits.shape == (B,) and logits.isfinite().all()
    if conditional == "acgan":
        assert class_logits is not None and class_logits.shape == (B, K)
    else:
        assert class_logits is None


def test_point_generator_is_unbounded():
    G, _ = make((2,))
    assert not any(isinstance(m, nn.Tanh | nn.Sigmoid) for m in G.modules())
    z, _ = batch(G)
    assert G(100 * z).abs().max() > 1  # a linear output layer, no squashing


def test_textbook_mlp_layer_sizes():
    G, D = make((1, 28, 28), num_classes=0)  # the default config: arch "mlp"
    assert linears(G) == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert linears(D) == [(784, 512), (512, 256), (256, 1)]
    assert [m.negative_slope for m in G.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 3
    assert [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 2
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    # D returns logits: no sigmoid anywhere, and a large head bias shows through unsquashed.
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())
    with torch.no_grad():
        D.head.bias.fill_(5.0)
        D.head.weight.zero_()
    logits, _ = D(torch.zeros(2, 1, 28, 28))
    assert_close(logits, torch.full((2,), 5.0))


def test_point_mlp_layer_sizes():
    G, D = make((2,), num_classes=0, latent_dim=16)
    assert linears(G) == [(16, 256), (256, 256), (256, 256), (256, 2)]
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 3
    assert linears(D) == [(2, 256), (256, 256), (256, 256), (256, 1)]
    assert sum(isinstance(m, nn.LeakyReLU) for m in D.modules()) == 3


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=str)
def test_dcgan_depth_adds_3x3_convs_at_each_resolution(shape):
    G, D = make(shape, arch="dcgan", depth=2, conditional="projection", spectral_norm="both")
    g_convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    d_convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    # width 8: two 16-channel blocks at s/4 and two 8-channel blocks at s/2 in G; D mirrors them
    assert [(m.in_channels, m.kernel_size[0]) for m in g_convs] == [(16, 3)] * 2 + [(8, 3)] * 2
    assert [m.in_channels for m in d_convs] == [shape[0], 8, 8, 8, 16, 16]
    assert all(parametrize.is_parametrized(m) for m in g_convs + d_convs)  # spectral_norm="both"
    z, y = batch(G)
    x = G(z, y)
    logits, _ = D(x, y)
    assert x.shape == (B, *shape) and logits.shape == (B,)
    logits.sum().backward()
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)


def test_dcgan_layer_sizes_and_init():
    G, D = make((1, 28, 28), num_classes=0, arch="dcgan", width=64)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert linears(G) == [(100, 128 * 7 * 7)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(128, 64), (64, 1)]
    assert [(m.kernel_size, m.stride, m.padding) for m in convs] == [((4, 4), (2, 2), (1, 1))] * 2
    d_convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in d_convs] == [(1, 64), (64, 128)]
    assert linears(D) == [(128 * 7 * 7, 1)]
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in D.modules())
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                assert abs(m.weight.mean()) < 0.005 and abs(m.weight.std() - 0.02) < 0.004
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                assert abs(m.weight.mean() - 1) < 0.01 and abs(m.weight.std() - 0.02) < 0.01
                assert not m.bias.any()


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 28, 28)), ("dcgan", (3, 32, 32)),
                                             ("mlp", (2,))])  # fmt: skip
def test_conditional_generator_depends_on_label(arch, shape):
    G, _ = make(shape, arch=arch, conditional="projection")
    G.eval()  # batch norm with running statistics: each sample on its own
    z, _ = batch(G, 1)
    z = z.expand(K, -1)
    x = G(z, torch.arange(K))
    for i in range(1, K):
        assert (x[i] - x[0]).abs().max() > 1e-4
    assert_close(G(z[:2], torch.tensor([3, 3])), x[[3, 3]])
    with pytest.raises(ValueError, match="labels"):
        G(z)


@pytest.mark.parametrize("spectral_norm", ["none", "d"])
@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 28, 28)), ("dcgan", (3, 28, 28)),
                                             ("mlp", (2,))])  # fmt: skip
def test_projection_logits_by_hand(arch, shape, spectral_norm):
    _, D = make(shape, arch=arch, conditional="projection", spectral_norm=spectral_norm)
    D.eval()  # spectral norm: no power iteration between the calls below
    x = torch.randn(4, *shape)
    y = torch.tensor([0, 3, 7, 9])
    logits, class_logits = D(x, y)
    with torch.no_grad():
        h = D.features(x)
        W, b, E = D.head.weight, D.head.bias, D.embed.weight  # ψ(h) = W·h + b
        if arch == "dcgan":  # the projection sees each channel summed over the 7x7 positions
            pooled = h.view(4, E.shape[1], 7 * 7).sum(2)
            assert E.shape[1] == 2 * 8  # width 8
        else:
            pooled = h
        expected = torch.stack(
            [sum(W[0, j] * h[i, j] for j in range(h.shape[1])) + b[0] for i in range(4)]
        ) + torch.einsum("bf,bf->b", E[y], pooled)
    assert class_logits is None
    assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    other, _ = D(x, (y + 1) % K)
    assert (other - logits).abs().max() > 1e-4  # the label matters
    with pytest.raises(ValueError, match="labels"):
        D(x)


def test_acgan_head():
    _, D = make((1, 28, 28), arch="dcgan", conditional="acgan")
    x = torch.randn(B, 1, 28, 28)
    logits, class_logits = D(x)  # the adversarial head is unconditional: no labels needed
    h = D.features(x)
    assert_close(class_logits, h @ D.classifier.weight.T + D.classifier.bias)
    assert_close(logits, (h @ D.head.weight.T + D.head.bias).squeeze(1))
    assert_close(D(x, torch.zeros(B, dtype=torch.long))[0], logits)


def spectral_norms(net: nn.Module) -> list[torch.Tensor]:
    """Largest singular value of every parametrized weight, as the matrix spectral_norm uses."""
    sigmas = []
    layers = nn.Linear | nn.Conv2d | nn.ConvTranspose2d | nn.Embedding
    for m in net.modules():
        if isinstance(m, layers) and parametrize.is_parametrized(m, "weight"):
            w = m.weight.detach()
            if isinstance(m, nn.ConvTranspose2d):  # output channels are dim 1
                w = w.transpose(0, 1)
            sigmas.append(torch.linalg.matrix_norm(w.flatten(1), ord=2))
    return sigmas


def kinds(net: nn.Module, types) -> int:
    return sum(isinstance(m, types) for m in net.modules())


@pytest.mark.parametrize("which", ["d", "both"])
@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 28, 28)), ("dcgan", (3, 32, 32)),
                                             ("mlp", (2,))])  # fmt: skip
def test_spectral_norm(arch, shape, which):
    G, D = make(shape, arch=arch, conditional="projection", spectral_norm=which)
    d_layers = kinds(D, nn.Linear | nn.Conv2d | nn.Embedding)
    g_layers = kinds(G, nn.Linear | nn.ConvTranspose2d) if which == "both" else 0
    with torch.no_grad():  # scale the raw weights: only the normalisation can bring σ back to 1
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.endswith("weight.original"):
                    p.mul_(10)
    z, y = batch(G, 4)
    for _ in range(15):  # one power iteration per training-mode forward pass
        D(G(z, y), y)
    d_sigmas, g_sigmas = spectral_norms(D), spectral_norms(G)
    assert len(d_sigmas) == d_layers >= 3 and len(g_sigmas) == g_layers
    assert_close(torch.stack(d_sigmas), torch.ones(d_layers), rtol=0, atol=0.03)
    if which == "both":
        assert_close(torch.stack(g_sigmas), torch.ones(g_layers), rtol=0, atol=0.03)
    embeddings = [m for m in G.modules() if isinstance(m, nn.Embedding)]  # labels: no SN
    assert embeddings and not any(parametrize.is_parametrized(m) for m in embeddings)


def test_no_spectral_norm_by_default():
    G, D = make((1, 28, 28), arch="dcgan")
    assert spectral_norms(G) == spectral_norms(D) == []


@pytest.mark.parametrize(
    ("overrides", "shape", "num_classes", "match"),
    [
        ({"arch": "dcgan"}, (1, 30, 30), 0, "multiple of 4"),
        ({"arch": "dcgan"}, (1, 68, 68), 0, "multiple of 4"),
        ({"arch": "dcgan"}, (1, 4, 4), 0, "multiple of 4"),
        ({"arch": "dcgan"}, (1, 28, 32), 0, "square"),
        ({"arch": "dcgan"}, (2,), 0, "points"),
        ({"conditional": "projection"}, (2,), 0, "class labels"),
        ({"conditional": "acgan"}, (1, 28, 28), 0, "class labels"),
        ({}, (28, 28), 0, "images"),
    ],
)
def test_unsupported_combinations(overrides, shape, num_classes, match):
    with pytest.raises(ValueError, match=match):
        make(shape, num_classes=num_classes, **overrides)


@pytest.mark.parametrize("spectral_norm", ["none", "both"])
@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 28, 28)), ("dcgan", (3, 32, 32)),
                                             ("mlp", (2,))])  # fmt: skip
def test_gradients_reach_every_generator_parameter(arch, shape, conditional, spectral_norm):
    G, D = make(shape, arch=arch, conditional=conditional, spectral_norm=spectral_norm)
    z, y = batch(G, 4)
    logits, class_logits = D(G(z, y), y)
    loss = logits.sum() + (class_logits.sum() if class_logits is not None else 0)
    loss.backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_same_seed_same_weights():
    cfg = TrainConfig(arch="dcgan", conditional="projection", spectral_norm="both", width=8)
    states = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        G, D = build_models(cfg, (3, 32, 32), K)
        states.append({**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}})
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert not torch.equal(states[0]["net.0.parametrizations.weight.original"],
                           states[2]["net.0.parametrizations.weight.original"])  # fmt: skip


def test_base_classes():
    for arch, shape in [("mlp", (1, 28, 28)), ("dcgan", (1, 28, 28)), ("mlp", (2,))]:
        G, D = make(shape, arch=arch)
        assert isinstance(G, Generator) and isinstance(D, Discriminator)


def test_pack_samples_concatenates_consecutive_samples():
    from gan.models import pack_samples

    x = torch.arange(12.0).view(6, 2)  # six 2D points
    packed = pack_samples(x, 3)
    assert_close(packed, torch.tensor([[0.0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]))
    images = torch.randn(4, 3, 8, 8)
    packed = pack_samples(images, 2)
    assert packed.shape == (2, 6, 8, 8)
    assert_close(packed[1, 3:], images[3])  # pack 1 is samples 2 and 3, channel-stacked
    with pytest.raises(ValueError, match="packs of 4"):
        pack_samples(x, 4)


def test_minibatch_stddev_is_the_mean_feature_spread_of_each_group():
    from gan.models import minibatch_stddev

    h = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    out = minibatch_stddev(h, 2)
    # group 0: std per feature (1, 2) → 1.5; group 1: identical rows → ~0 (sqrt of 1e−8)
    assert_close(out[:, :2], h)
    assert_close(out[:, 2], torch.tensor([1.5, 1.5, 1e-4, 1e-4]), atol=1e-6, rtol=0)
    assert_close(minibatch_stddev(h, 3)[:, 2], minibatch_stddev(h, 4)[:, 2])  # 3 ∤ 4: one group


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (2,)), ("mlp", (1, 28, 28)),
                                             ("dcgan", (3, 28, 28))], ids=str)  # fmt: skip
def test_packed_discriminator_judges_one_logit_per_pack(arch, shape):
    G, D = make(shape, 0, arch=arch, pack=2, minibatch_std=2, batch_size=8)
    x = G(torch.randn(8, G.latent_dim))
    logits, _ = D(x)
    assert logits.shape == (4,)
    # a pack's logit depends on its own samples (and, through the group std, its group's)
    moved = x.clone()
    moved[7] += 1.0
    changed = D(moved)[0] != logits
    assert changed.tolist() == [False, False, True, True]  # packs 2, 3 are one std group
