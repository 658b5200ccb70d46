"""Model registry, parameter counts, invariances, MI attention, gradients and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jettag.data.kinds.particles import example_inputs
from jettag.models import create_model, feature_dim, layers, list_models, mi_kernels
from jettag.models.layers import (
    Attention,
    MaskedBatchNorm,
    PairEmbed,
    ValueAttention,
    dropout,
    dropped_positions,
)
from jettag.models.profile import count_parameters, flops_per_jet

ALL = ["concat_event", "lundnet3", "lundnet5", "mipart", "mipart_l", "mixer_event", "part", "particlenet",
       "pfn", "transformer", "transformer_tracks", "xattn_event"]
# mipart_l is mipart's code with wider layers: the (slower) invariance tests run on mipart
INVARIANCE = ["mipart", "part", "particlenet", "pfn"]


def repad(inputs, length):
    """The same jets zero-padded (or cut) to ``length`` particles."""
    p = inputs[0].shape[-1]
    if length >= p:
        return tuple(F.pad(t, (0, length - p)) for t in inputs)
    return tuple(t[..., :length] for t in inputs)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=3, features="kin").eval() for name in INVARIANCE}


def test_registry_lists_every_model_and_rejects_unknown_names():
    assert list_models() == sorted(ALL)
    with pytest.raises(ValueError, match="unknown model 'parT'"):
        create_model("parT")
    with pytest.raises(ValueError, match="unknown feature set"):
        create_model("pfn", features="kinematics")
    assert [feature_dim(f) for f in ("kin", "kinpid", "full", 11)] == [7, 13, 17, 11]


def test_parameter_counts_match_the_reference_implementations():
    from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

    counts = {name: count_parameters(create_model(name, num_classes=2, features="kin")) for name in ALL}
    # independent: weaver-core's modules in particle_transformer's configuration
    w_part = WeaverParT(input_dim=7, num_classes=2, use_pre_activation_pair=False, fc_params=[])
    conv = [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))]
    w_pn = WeaverParticleNet(7, 2, conv_params=conv, fc_params=[(256, 0.1)], use_fusion=False)
    assert counts["part"] == count_parameters(w_part) == 2_141_134
    assert counts["particlenet"] == count_parameters(w_pn) == 366_160
    # the MIParT authors' code (measured, models.md) and EnergyFlow's PFN
    assert counts["mipart"] == 657_014
    assert counts["mipart_l"] == 2_318_710
    assert counts["pfn"] == 83_842
    # seed 001's transformer with Haiku-sized heads (docs/models.md: the seed's 101,794 and the 160)
    assert counts["transformer"] == counts["transformer_tracks"] == 101_634


def test_flops_per_jet_scale_as_expected():
    part = create_model("part", features="kin")
    f64, f128 = flops_per_jet(part, 64, batch_size=1), flops_per_jet(part, 128, batch_size=1)
    # FFN and projections grow linearly, pair MLP and attention quadratically: between 2x and 4x
    assert 2.0 < f128 / f64 < 4.0
    # ParT paper: ~340M multiply-adds per jet at 128 particles (2 FLOPs each)
    assert 600e6 < f128 < 760e6


@pytest.mark.parametrize("name", INVARIANCE)
def test_padding_does_not_change_outputs(models, name):
    model = models[name]
    inputs = example_inputs(7, lengths=[5, 31, 2, 60], length=60, seed=1)
    with torch.no_grad():
        batch = model(*repad(inputs, 128))
        for b, n in enumerate([5, 31, 2, 60]):
            alone = model(*repad(tuple(t[b:b + 1] for t in inputs), n))
            torch.testing.assert_close(alone[0], batch[b], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mipart", "part", "particlenet"])
def test_inference_in_sub_batches_equals_the_whole_batch(models, name):
    """Without autograd, eval-mode CPU inference runs in length-sorted sub-batches cut to their longest
    jet; the logits must be those of the whole batch (computed with autograd on, which never splits),
    in the input order. A budget of 64 particles splits these 9 jets into several sub-batches."""
    model = models[name]
    lengths = [17, 3, 40, 9, 1, 33, 12, 40, 25]
    inputs = example_inputs(7, lengths=lengths, length=48, seed=8)
    inputs[3][5, 0, 4] = False  # a hole: the sub-batch must still reach the jet's last real particle
    whole = model(*inputs).detach()
    budget = model.inference_particles
    try:
        model.inference_particles = 64
        with torch.no_grad():
            split = model(*inputs)
        with torch.no_grad(), layers.capture_attention(model) as rec:  # captured per batch, never split
            model(*inputs)
    finally:
        model.inference_particles = budget
    # sub-batches change only the padding and the GEMM shapes (summation order): float32 rounding
    torch.testing.assert_close(split, whole, atol=2e-5, rtol=1e-5)
    assert all(len(calls) == 1 and calls[0].shape[0] == len(lengths) for calls in rec.values())


@pytest.mark.parametrize("name", ["mipart", "part"])
def test_keys_widened_for_the_attention_kernel_change_nothing(models, name):
    """Without autograd on CPU the pair bias gets -inf columns up to a multiple of 16 keys and the
    attention zero keys to match (``layers.sdpa_keys``): logits equal those with autograd (never
    widened), and recorded maps keep one column per real key."""
    model = models[name]
    inputs = example_inputs(7, lengths=[37, 12, 30], length=37, seed=4)
    with torch.no_grad():
        bias = layers.key_padding_bias(torch.randn(3, 8, 37, 37), inputs[3][:, 0], torch.float32)
        widened = model(*inputs)
        with layers.capture_attention(model) as rec:
            model(*inputs)
    assert bias.shape == (3, 8, 37, 48) and torch.isneginf(bias[..., 37:]).all()
    assert torch.isneginf(bias[1, :, :, 12:]).all() and torch.isfinite(bias[1, :, :, :12]).all()
    # the same sums in another blocking of the kernel: float32 rounding
    torch.testing.assert_close(widened, model(*inputs).detach(), atol=2e-5, rtol=1e-5)
    maps = [calls[0] for name, calls in rec.items() if "cls" not in name]
    assert maps and all(m.shape[-2:] == (37, 37) for m in maps)


@pytest.mark.parametrize("name", INVARIANCE)
def test_constituent_order_does_not_matter(models, name):
    model = models[name]
    inputs = example_inputs(7, lengths=[40, 23], length=48, seed=2)
    perm = torch.cat((torch.randperm(40, generator=torch.Generator().manual_seed(3)), torch.arange(40, 48)))
    permuted = tuple(t.clone() for t in inputs)
    for t, src in zip(permuted, inputs):
        t[0] = src[0][..., perm]  # jet 0: shuffle its 40 real particles
    with torch.no_grad():
        torch.testing.assert_close(model(*permuted), model(*inputs), atol=2e-5, rtol=1e-5)


def test_mi_softmax_rows_sum_to_one_over_real_particles(models):
    model = models["mipart"]
    lengths = [7, 20]
    _, _, vectors, mask = example_inputs(7, lengths=lengths, length=24, seed=4)
    with torch.no_grad():
        u1, _ = model.pair_embed(vectors, mask)
        probs = model.mi_probabilities(u1.clone(), mask, torch.float32)  # in place without autograd
    assert probs.shape == (2, 64, 24, 24)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(probs[b, :, :, :n].sum(-1), torch.ones(64, 24))
        assert probs[b, :, :, n:].abs().max() == 0
        # independent: a plain softmax over the real keys only
        expect = torch.softmax(u1[b, :, :n, :n], dim=-1)
        torch.testing.assert_close(probs[b, :, :n, :n], expect)


def _keep(shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    """The keep mask (1.0 kept, 0.0 dropped) that ``dropped_positions`` draws after manual_seed(seed)."""
    torch.manual_seed(seed)
    keep = torch.ones(shape).view(-1)
    keep[dropped_positions(keep.numel(), p)] = 0.0
    return keep.view(shape)


def test_dropped_positions_are_an_independent_bernoulli_process():
    """Every element dropped independently with probability p: the rate, neighbours, distant elements,
    the two halves of the array and two successive draws all agree with i.i.d. Bernoulli(p)."""
    p, n = 0.1, 1_000_000
    torch.manual_seed(6)
    masks = []
    for _ in range(2):
        pos = dropped_positions(n, p)
        assert pos.dtype == torch.int64 and bool((pos[1:] > pos[:-1]).all()) and 0 <= pos[0] and pos[-1] < n
        m = torch.zeros(n)
        m[pos] = 1.0
        masks.append(m)

    def near(rate: float, q: float, count: int) -> bool:  # within 5 standard deviations of q
        return abs(rate - q) < 5 * (q * (1 - q) / count) ** 0.5

    for m in masks:  # sd of the rate ~3e-4; of a pair rate ~1e-4
        assert near(m.mean().item(), p, n)
        assert near(m[: n // 2].mean().item(), p, n // 2) and near(m[n // 2:].mean().item(), p, n // 2)
        for lag in (1, 2, 7, 1000):  # P(both dropped) = p^2 at every distance
            assert near((m[lag:] * m[:-lag]).mean().item(), p * p, n - lag)
    assert near((masks[0] * masks[1]).mean().item(), p * p, n)  # a fresh mask on every call
    torch.manual_seed(6)
    assert torch.equal(dropped_positions(n, p), masks[0].nonzero()[:, 0])  # the generator's state fixes it
    assert dropped_positions(0, p).numel() == 0 and dropped_positions(10, 0.0).numel() == 0


def test_mi_kernel_masks_are_independent_bernoulli():
    """``mi_kernels.keep_mask``: every element dropped independently with probability p, within a
    row (the two halves of one random word, neighbouring words), across rows and between seeds; the
    seed comes from torch's generator, so its state fixes the mask; p = 0 keeps everything."""
    p, shape = 0.1, (2000, 7, 71)  # odd rows: a row's last word has one unused half
    n = 2000 * 7 * 71

    def near(rate: float, q: float, count: int) -> bool:  # within 5 standard deviations of q
        return abs(rate - q) < 5 * (q * (1 - q) / count) ** 0.5

    torch.manual_seed(3)
    seeds = [mi_kernels.draw_seed(), mi_kernels.draw_seed()]
    drops = [~mi_kernels.keep_mask(seed, shape, p) for seed in seeds]
    for d in drops:
        assert d.shape == shape and near(d.mean(), p, n)
        assert near(d[..., 0::2].mean(), p, n // 2) and near(d[..., 1::2].mean(), p, n // 2)
        for lag in (1, 2, 3):  # the same word (lag 1 at even columns), neighbouring words
            assert near((d[..., lag:] & d[..., :-lag]).mean(), p * p, n)
        assert near((d[:, 1:] & d[:, :-1]).mean(), p * p, n)  # the next row
        assert near((d[1:] & d[:-1]).mean(), p * p, n)  # the next row block
    assert near((drops[0] & drops[1]).mean(), p * p, n)  # two blocks' masks
    torch.manual_seed(3)
    assert mi_kernels.draw_seed() == seeds[0]
    assert mi_kernels.keep_mask(seeds[0], shape, 0.0).all()


def test_mi_attention_dropout_is_an_independent_scaled_bernoulli_mask():
    """Training-mode MI attention = softmax(U1) * keep / (1 - p) @ V with the keep mask of
    ``dropped_positions`` (torch's generator), and no dropout in eval mode."""
    p, (b, h, n) = 0.25, (3, 4, 9)
    attn = ValueAttention(8, h, dropout=p).train()
    x = torch.randn(b, n, 8)
    probs = torch.softmax(torch.randn(b, h, n, n), -1)
    torch.manual_seed(5)
    got = attn(x, probs)
    keep = _keep((b, h, n, n), p, 5)
    v = attn.vv(x).view(b, n, h, 2).transpose(1, 2)
    expect = torch.matmul(probs * keep / (1 - p), v).transpose(1, 2).reshape(b, n, 8)
    # float32: the 1/(1-p) scale is applied after the product instead of before
    torch.testing.assert_close(got, expect, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(attn.eval()(x, probs), torch.matmul(probs, v).transpose(1, 2).reshape(b, n, 8))


def test_attention_and_block_dropout_are_scaled_bernoulli_masks():
    """ParT's training attention (explicit softmax + ``dropout_matmul``) equals SDPA's product with the
    same mask, and ``layers.dropout`` is x * keep / (1 - p); both pass gradcheck with a fixed seed."""
    p, (b, t, d, h) = 0.2, (2, 7, 8, 2)
    attn = Attention(d, h, dropout=p).double().train()
    x = torch.randn(b, t, d, dtype=torch.double, requires_grad=True)
    bias = torch.randn(b, h, t, t, dtype=torch.double)
    bias[:, :, :, -2:] = float("-inf")  # two padded keys
    torch.manual_seed(3)
    got = attn(x, None, bias)
    q, k, v = F.linear(x, attn.in_proj.weight, attn.in_proj.bias).split(d, dim=-1)
    q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
    probs = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5 + bias, -1)
    keep = _keep((b, h, t, t), p, 3).double()
    expect = attn.out_proj(((probs * keep / (1 - p)) @ v).transpose(1, 2).reshape(b, t, d))
    torch.testing.assert_close(got, expect)  # float64: summation order only

    def f(x):
        torch.manual_seed(4)  # the same mask on every evaluation
        return attn(x, None, bias)

    assert torch.autograd.gradcheck(f, (x,))
    y = torch.randn(5, 11, dtype=torch.double, requires_grad=True)
    torch.manual_seed(8)
    torch.testing.assert_close(dropout(y, p, True), y * _keep((5, 11), p, 8).double() / (1 - p))
    assert dropout(y, p, False) is y

    def g(y):
        torch.manual_seed(9)
        return dropout(y, p, True)

    assert torch.autograd.gradcheck(g, (y,))


def test_mi_attention_dropout_gradients():
    """Backward of the dropout + value mixing (mask rebuilt from saved state) against finite differences."""
    attn = ValueAttention(6, 3, dropout=0.3).double().train()
    x = torch.randn(2, 5, 6, dtype=torch.double, requires_grad=True)
    probs = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.double), -1).requires_grad_()

    def f(x, probs):
        torch.manual_seed(7)  # the same mask on every evaluation
        return attn(x, probs)

    assert torch.autograd.gradcheck(f, (x, probs))


def test_fused_linear_gelu_is_linear_then_exact_gelu():
    """Without autograd on CPU ``linear`` is oneDNN's kernel with the GELU fused: the erf form."""
    torch.manual_seed(0)
    x, w, b = torch.randn(300, 48) * 2, torch.randn(96, 48) * 0.3, torch.randn(96)
    with torch.no_grad():
        fused = layers.linear(x, w, b, "gelu")
    # another GEMM kernel (summation order) and GELU evaluation: float32 rounding; the tanh
    # approximation differs by up to ~1e-3 and fails this
    torch.testing.assert_close(fused, F.gelu(F.linear(x, w, b)), atol=1e-5, rtol=1e-5)


def test_packed_weights_follow_in_place_updates():
    """``linear`` keeps a Parameter's weight in oneDNN's layout between calls; an in-place update (an
    optimiser step, ``load_state_dict``) must reach the next call."""
    torch.manual_seed(0)
    lin, x = torch.nn.Linear(48, 96), torch.randn(300, 48)
    with torch.no_grad():
        before = layers.linear(x, lin.weight, lin.bias)
        lin.load_state_dict({"weight": lin.weight * -0.5, "bias": lin.bias})
        after = layers.linear(x, lin.weight, lin.bias, "gelu")
    # another GEMM kernel (summation order): float32 rounding
    torch.testing.assert_close(after, F.gelu(F.linear(x, lin.weight, lin.bias)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(before, F.linear(x, lin.weight * -2, lin.bias), atol=1e-5, rtol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is not bypassed
        assert layers.linear(x, lin.weight, lin.bias, "gelu").dtype == torch.bfloat16


def test_block_inference_path_adds_in_place_only_where_the_dtype_allows():
    """Without autograd in eval a block adds its residuals into fresh outputs in place; under mixed
    precision (a bf16 mixer output, float32 residual stream) the sums must still be float32 and equal
    to the autograd path's."""
    torch.manual_seed(0)
    block = layers.NormFormerBlock(16, 2).eval()
    x, residual = torch.randn(3, 5, 16).bfloat16(), torch.randn(3, 5, 16)
    with torch.no_grad():
        fast = block._finish(x.clone(), residual)
    slow = block._finish(x.clone(), residual).detach()
    assert fast.dtype == slow.dtype == torch.float32
    # oneDNN's GEMMs against MKL's (summation order): float32 rounding; a sum rounded to bf16 is ~1e-2 off
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_shared_mi_probabilities_gradients():
    """The shared path (U1 scattered from the pair values and turned into probabilities in place, the
    fused kernels of three chained MI blocks, their gradients gathered into one softmax backward that
    returns the pair values' gradient) against finite differences; padded keys and queries, one of
    them a hole in the mask."""
    blocks = [ValueAttention(6, 3, dropout=0.3).double().train() for _ in range(3)]
    keep = torch.tensor([[True] * 5, [True, False, True, True, False]])
    ii, jj = torch.tril_indices(5, 5)
    bidx, t = (keep[:, ii] & keep[:, jj]).nonzero(as_tuple=True)
    x = torch.randn(2, 5, 6, dtype=torch.double, requires_grad=True)
    values = torch.randn(bidx.numel(), 3, dtype=torch.double, requires_grad=True)

    def f(x, values):
        torch.manual_seed(7)  # the same masks on every evaluation
        shared = layers.SharedProbabilities(layers.PairValues(values, bidx, ii[t], jj[t], 2, 5), keep)
        for block in blocks:
            x = x + block(x, shared)
        return x

    assert torch.autograd.gradcheck(f, (x, values))


def test_mipart_training_step_is_the_same_with_shared_probabilities(monkeypatch):
    """MIParT's CPU training path (``SharedProbabilities``, the fused ``mi_kernels``) against the plain
    autograd one (softmax(U1) as a tensor, each MI block multiplying it by the keep mask of
    ``mi_kernels.keep_mask`` for the seed it draws): same dropout masks, same loss and gradients."""
    from jettag.models import mipart

    torch.manual_seed(0)
    model = create_model("mipart", num_classes=3, features="kin").train()
    inputs = example_inputs(7, lengths=[17, 3, 40, 9, 33], length=40, seed=8)
    labels = torch.tensor([0, 1, 2, 1, 0])

    def step():
        torch.manual_seed(5)
        model.zero_grad()
        loss = F.cross_entropy(model(*inputs), labels)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    def masked_mixing(self, x, probs):
        b, n, d = x.shape
        v = self.vv(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        keep = mi_kernels.keep_mask(mi_kernels.draw_seed(), tuple(probs.shape), self.dropout)
        out = (probs * torch.from_numpy(keep).view(probs.shape) / (1 - self.dropout)) @ v
        return out.transpose(1, 2).reshape(b, n, d)

    shared_loss, shared_grad = step()
    monkeypatch.setattr(mipart, "sparse_dropout_ok", lambda x: False)
    monkeypatch.setattr(ValueAttention, "forward", masked_mixing)
    plain_loss, plain_grad = step()
    # the kernels sum in another order than bmm and autograd: float32 rounding
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(shared_grad, plain_grad, atol=1e-5 * plain_grad.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("name", ["mipart", "part", "particlenet", "pfn"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, features="kin").train()
    inputs = example_inputs(7, lengths=[12, 30, 3], length=32, seed=5)
    loss = F.cross_entropy(model(*inputs), torch.tensor([0, 1, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_pair_embedding_paths_agree(monkeypatch):
    """Real-pair (eager), whole-triangle (torch.compile) and broadcast (ONNX) paths give one U. In eval
    mode without autograd the real-pair path runs the BN-folded MLP a few rows at a time (5 here,
    so the 70 real pairs span chunk boundaries); the other two apply BN as written."""
    monkeypatch.setattr(layers, "PAIR_ACTIVATIONS", 5 * 16)  # 5 rows at the widest layer, 16
    torch.manual_seed(0)
    embed = PairEmbed(4, (16, 16, 8), outputs=(1, 2)).eval()
    for m in embed.modules():
        if isinstance(m, MaskedBatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    _, _, vectors, mask = example_inputs(7, lengths=[9, 16], length=16, seed=6)
    keep = (mask[:, 0, :, None] & mask[:, 0, None, :])[:, None]
    for mode in ("eval", "train"):  # train: batch statistics over real pairs in every path
        embed.train(mode == "train")
        with torch.no_grad():
            real = embed._forward_real_pairs(vectors, mask)
            tri = embed._forward_tril(vectors, mask)
            dense = embed._forward_dense(vectors, mask)
        for a, b, c in zip(real, tri, dense):
            assert torch.equal(a, a.transpose(-1, -2))
            assert a[~keep.expand_as(a)].abs().max() == 0  # pairs with a padded particle are 0
            torch.testing.assert_close(b * keep, a, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(c * keep, a, atol=1e-5, rtol=1e-5)


def test_pair_attention_biases_and_their_kept_layers(monkeypatch):
    """At float32 inference ``attention_biases`` writes the pair MLP's values into a bias that already
    holds -inf at padded keys and at the keys widened for SDPA: it must equal ``key_padding_bias`` of
    the autograd path's U, a hole in a mask included. The folded, packed layers it keeps between calls
    must follow an in-place change of a BN statistic (``load_state_dict``)."""
    monkeypatch.setattr(layers, "PAIR_ACTIVATIONS", 5 * 16)  # chunks of 5 rows: boundaries inside the jets
    torch.manual_seed(0)
    embed = PairEmbed(4, (16, 8)).eval()
    for m in embed.modules():
        if isinstance(m, MaskedBatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    _, _, vectors, mask = example_inputs(7, lengths=[9, 19, 3], length=19, seed=6)
    mask[1, 0, 4] = False  # a hole
    slow = layers.key_padding_bias(embed(vectors, mask)[0], mask[:, 0], torch.float32).detach()
    with torch.no_grad():
        (fast,) = embed.attention_biases(vectors, mask, torch.float32)
    assert fast.shape == (3, 8, 19, 32) and torch.isneginf(fast[..., 19:]).all()
    assert slow.shape == (3, 8, 19, 19) and torch.isneginf(fast[1, :, :, 4]).all()
    # BN folded into the Linears and oneDNN's GEMM against BN as written: float32 rounding
    torch.testing.assert_close(fast[..., :19], slow, atol=1e-5, rtol=1e-5)

    state = embed.state_dict()
    state["layers.0.bn.running_mean"] = state["layers.0.bn.running_mean"] + 0.5
    embed.load_state_dict(state)
    fresh = PairEmbed(4, (16, 8)).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(embed.attention_biases(vectors, mask, torch.float32)[0],
                           fresh.attention_biases(vectors, mask, torch.float32)[0])
        assert embed.attention_biases(vectors, mask, torch.bfloat16)[0].dtype == torch.bfloat16


def test_pair_layer_batchnorm_gelu_in_cpu_training():
    """In CPU training a pair layer's BN + GELU is one autograd function (``models.bn_gelu``): output,
    every gradient and the running statistics (momentum and cumulative) must be those of
    ``nn.BatchNorm1d`` + ``F.gelu``; gradcheck in float64; autocast and a single row keep torch's path."""
    import copy

    from jettag.models import bn_gelu
    from jettag.models.layers import PairLayer

    torch.manual_seed(0)
    layer = PairLayer(16, 32, "gelu").train()
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(layer)
    for momentum in (0.1, None):
        layer.bn.momentum = ref.bn.momentum = momentum
        x = (torch.randn(1000, 16) * 2 + 1).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        y = layer(x, None)
        y_ref = F.gelu(torch.nn.BatchNorm1d.forward(ref.bn, ref.linear(x_ref)))
        g = torch.randn_like(y)
        y.backward(g)
        y_ref.backward(g)
        # the same sums in another order (float64 column sums against torch's float32 kernels)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
        for (name, p), p_ref in zip(layer.named_parameters(), ref.parameters()):  # sums over 1,000 rows
            torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-4, rtol=1e-4, msg=name)
        for (name, b), b_ref in zip(layer.named_buffers(), ref.buffers()):
            torch.testing.assert_close(b, b_ref, atol=1e-6, rtol=1e-6, msg=name)

    small = PairLayer(5, 6, "gelu").double().train()
    x = torch.randn(40, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: bn_gelu._BatchNormGelu.apply(small.linear(x), w, b, 1e-5)[0],
        (x, small.bn.weight, small.bn.bias))
    assert not bn_gelu.supported(torch.randn(1, 4)) and not bn_gelu.supported(torch.randn(4, 4, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bn_gelu.supported(torch.randn(8, 4))


def test_pair_scatter_backward_gathers_both_triangles_once():
    """The symmetric pair scatter of the eager pair embedding: its hand-written backward (the gradient
    at (i, j) plus at (j, i), the diagonal once) against finite differences."""
    from jettag.models.layers import _ScatterPairs

    torch.manual_seed(0)
    b, n = 3, 6
    i, j = torch.tril_indices(n, n)
    keep = torch.rand(b * i.numel()) > 0.3  # some pairs absent, as padded pairs are
    bidx, ii, jj = (t[keep] for t in (torch.arange(b).repeat_interleave(i.numel()), i.repeat(b), j.repeat(b)))
    x = torch.randn(bidx.numel(), 4, dtype=torch.double, requires_grad=True)
    y = _ScatterPairs.apply(x, bidx, ii, jj, b, n)
    torch.testing.assert_close(y, y.transpose(-1, -2))
    assert torch.autograd.gradcheck(lambda x: _ScatterPairs.apply(x, bidx, ii, jj, b, n), (x,))


def test_masked_batchnorm_uses_real_entries_only():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10)
    mask = torch.rand(4, 1, 10) > 0.4
    ours = MaskedBatchNorm(3, momentum=0.5).train()
    ref = torch.nn.BatchNorm1d(3, momentum=0.5).train()
    y = ours(x, mask)
    real = x.permute(0, 2, 1)[mask[:, 0]]  # (n_real, 3): only real entries, as plain BN input
    y_ref = ref(real)
    torch.testing.assert_close(y.permute(0, 2, 1)[mask[:, 0]], y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    # channel-last layout gives the same numbers
    ours2 = MaskedBatchNorm(3).train()
    y2 = ours2(x.transpose(1, 2), mask.transpose(1, 2), channel_last=True)
    torch.testing.assert_close(y2.transpose(1, 2), y)


def test_predict_proba_and_classifier_reset(models):
    model = create_model("part", num_classes=4, features="kinpid")
    inputs = example_inputs(13, lengths=[4, 9], length=16, seed=7)
    proba = model.predict_proba(*inputs)
    torch.testing.assert_close(proba.sum(-1), torch.ones(2))
    assert model.training  # restored
    model.reset_classifier(2)
    assert model.get_classifier().out_features == 2 and model(*inputs).shape == (2, 2)


def test_bf16_autocast_runs_and_stays_close(models):
    inputs = example_inputs(7, lengths=[20, 8], length=24, seed=8)
    for name in ("mipart", "part"):
        model = models[name]
        dtypes: list[torch.dtype] = []
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        hooks = [m.register_forward_hook(lambda _m, _i, out, seen=dtypes: seen.append(out.dtype))
                 for m in linears]
        try:
            with torch.no_grad():
                ref = model(*inputs)
                n_calls = len(dtypes)
                assert n_calls > 0 and set(dtypes) == {torch.float32}
                dtypes.clear()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    low = model(*inputs)
        finally:
            for h in hooks:
                h.remove()
        # autocast ran: every Linear module call (embeddings, MLPs, head) computed in bf16
        assert len(dtypes) == n_calls and set(dtypes) == {torch.bfloat16}, name
        assert torch.isfinite(low).all() and not torch.equal(low.float(), ref)
        # bf16 keeps 8 significant bits (unit roundoff u = 2^-9 = 0.2%); the logits go through ~10
        # sequential blocks of rounded matmuls, so errors of a few u per block add up to ~1% of the
        # largest logit (measured: 1.1% MIParT, 1.0% ParT). 3% (15 u) bounds that with margin while a
        # float16-like overflow or a block skipped under autocast (errors of order 100%) fails.
        err = (low.float() - ref).abs().max() / ref.abs().max()
        assert err < 0.03, (name, float(err))


def test_bad_inputs_raise_clear_errors(models):
    points, features, vectors, mask = example_inputs(7, lengths=[5], length=8)
    with pytest.raises(ValueError, match=r"features must be \(batch, 7, particles\)"):
        models["part"](points, features[:, :5], vectors, mask)
    with pytest.raises(ValueError, match="mask must be"):
        models["mipart"](points, features, vectors, mask[..., :4])
    with pytest.raises(ValueError, match="points must be"):
        models["particlenet"](points[:, :1], features, vectors, mask)


def test_edgeconv_real_edge_path_equals_dense_path_in_training():
    """The eager EdgeConv (real particles' edges only, native BN) against the dense export path: same
    outputs, BN running statistics and gradients in training mode, padded rows zero."""
    import copy

    from jettag.models.layers import EdgeConv, knn_indices

    torch.manual_seed(0)
    conv = EdgeConv(4, 5, (8, 8, 6)).train()
    dense = copy.deepcopy(conv)
    lengths = torch.tensor([2, 9, 12, 6])  # a jet with fewer than k real particles included
    keep = torch.arange(12).unsqueeze(0) < lengths.unsqueeze(1)
    feats = (torch.randn(4, 12, 5) * keep.unsqueeze(-1)).requires_grad_()
    pts = torch.randn(4, 12, 2)
    got = conv(pts, feats, keep)
    w = dense.convs[0].weight
    center, neigh = F.linear(feats, w[:, :5] - w[:, 5:]), F.linear(feats, w[:, 5:])
    expect = dense._forward_dense(feats, keep, knn_indices(pts, keep, 4), center, neigh)
    # float32 sums over the same edges in another order
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    assert got[~keep].abs().max() == 0 and got[keep].abs().max() > 0.1
    for (name, a), b in zip(conv.named_buffers(), dense.buffers()):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-6, rtol=1e-5, msg=name)
    g_got = torch.autograd.grad(got.square().sum(), [feats, *conv.parameters()])
    g_exp = torch.autograd.grad(expect.square().sum(), [feats, *dense.parameters()])
    for a, b in zip(g_got, g_exp):
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_forward_is_head_of_features_and_classifier_is_the_last_linear_run(name: str) -> None:
    from jettag.data.kinds import get_kind

    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    x = get_kind(model.input_kind).example_inputs(model, batch_size=2, length=16)
    feats = model.forward_features(*x)
    assert feats.ndim == 2 and feats.shape[0] == 2
    torch.testing.assert_close(model.forward_head(feats), model(*x), rtol=0, atol=0)  # the same ops
    called: list[torch.nn.Module] = []  # the Linear layers in the order the forward pass runs them
    hooks = [m.register_forward_hook(lambda mod, i, o: called.append(mod))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    model(*x)
    for h in hooks:
        h.remove()
    assert model.get_classifier() is called[-1]
    model.reset_classifier(5)
    assert model(*x).shape == (2, 5) and model.num_classes == 5 and model.get_classifier().out_features == 5
