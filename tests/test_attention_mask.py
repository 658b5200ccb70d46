"""The attention masking of the transformers against attention written out independently here.

Each layer gets fixed random weights and inputs with padded particles; the reference computes
softmax(q k^T / sqrt(d) + bias) v per head with numpy-free torch ops in float64, padded keys removed
by index (not by -inf), so a mask that is dropped, inverted or applied to the wrong axis is caught.
Tolerances: float32 layers against a float64 reference over a few dozen terms, 1e-5 absolute.
"""

from __future__ import annotations

import math

import pytest
import torch

from jettag.models.layers import Attention, ClassAttentionHead, ValueAttention, key_padding_bias

B, P, D, H = 2, 5, 8, 2
ATOL = 1e-5  # float32 layer vs float64 reference


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, P, D, generator=g)
    bias = torch.randn(B, H, P, P, generator=g)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    return x, bias, mask


def _reference(attn: Attention, query: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None,
               keep: torch.Tensor) -> torch.Tensor:
    """Per jet and head, attention over the kept keys only (bias restricted to them), float64."""
    w, b = attn.in_proj.weight.double(), attn.in_proj.bias.double()
    d, hd = query.shape[-1], attn.head_dim
    out = torch.zeros(query.shape, dtype=torch.float64)
    for j in range(query.shape[0]):
        idx = torch.nonzero(keep[j]).ravel()
        q = query[j].double() @ w[:d].T + b[:d]
        k = kv[j, idx].double() @ w[d:2 * d].T + b[d:2 * d]
        v = kv[j, idx].double() @ w[2 * d:].T + b[2 * d:]
        heads = []
        for h in range(attn.num_heads):
            sl = slice(h * hd, (h + 1) * hd)
            scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            if bias is not None:
                scores = scores + bias[j, h][:, idx].double()
            heads.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        out[j] = torch.cat(heads, dim=-1) @ attn.out_proj.weight.double().T + attn.out_proj.bias.double()
    return out


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
def test_self_attention_ignores_padded_keys(explicit: bool) -> None:
    torch.manual_seed(1)
    attn = Attention(D, H).eval()
    x, bias, mask = _inputs()
    attn_mask = key_padding_bias(bias, mask, torch.float32)
    assert attn_mask.dtype == torch.float32
    assert torch.isinf(attn_mask[0, :, :, 3:]).all() and (attn_mask[0, :, :, 3:] < 0).all()
    torch.testing.assert_close(attn_mask[0, :, :, :3], bias[0, :, :, :3], rtol=0, atol=0)
    torch.testing.assert_close(attn_mask[1], bias[1], rtol=0, atol=0)
    record: list[torch.Tensor] = []
    attn.record = record if explicit else None
    with torch.no_grad():
        out = attn(x, None, attn_mask.half() if explicit else attn_mask)  # another dtype is cast to q's
    want = _reference(attn, x, x, bias if not explicit else bias.half().float(), mask)
    torch.testing.assert_close(out.double(), want, rtol=0, atol=ATOL if not explicit else 2e-3)
    if explicit:  # half-precision bias: 2e-3 covers its rounding (|bias| < 4, 11-bit mantissa)
        (probs,) = record
        assert probs.shape == (B, H, P, P) and probs.dtype == torch.float32
        assert (probs[0, :, :, 3:] == 0).all()  # -inf keys get exactly 0
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, H, P), rtol=0, atol=1e-6)


def test_cross_attention_uses_the_key_sequence() -> None:
    """Class attention: one query token against (class token, particles) with padded particles."""
    torch.manual_seed(2)
    attn = Attention(D, H).eval()
    x, _, mask = _inputs(3)
    cls = torch.randn(B, 1, D)
    u = torch.cat((cls, x), dim=1)
    keep = torch.cat((torch.ones(B, 1, dtype=torch.bool), mask), dim=1)
    cls_mask = torch.zeros(B, 1, 1, 1 + P).masked_fill(~keep[:, None, None, :], float("-inf"))
    with torch.no_grad():
        out = attn(cls, u, cls_mask)
    torch.testing.assert_close(out.double(), _reference(attn, cls, u, None, keep), rtol=0, atol=ATOL)


def test_class_attention_pool_ignores_padded_particles() -> None:
    """The class token does not change when the padded particles' values change, and does when a
    real particle's does."""
    torch.manual_seed(4)
    head = ClassAttentionHead(D, H, num_layers=2, num_classes=3).eval()
    x, _, mask = _inputs(5)
    m = mask[:, None, :]
    with torch.no_grad():
        base = head.pool(x, m)
        noisy = x.clone()
        noisy[0, 3:] = torch.randn(2, D) * 10
        torch.testing.assert_close(head.pool(noisy, m), base, rtol=0, atol=1e-6)  # float32 rounding
        noisy[0, :3] = torch.randn(3, D) * 10
        assert (head.pool(noisy, m)[0] - base[0]).abs().max() > 1e-4  # 1000x the padded case's bound
        assert head(x, m).shape == (B, 3)


def test_value_attention_is_probs_times_values_per_head() -> None:
    torch.manual_seed(6)
    layer = ValueAttention(D, H).eval()
    x, bias, mask = _inputs(7)
    probs = torch.softmax(key_padding_bias(bias, mask, torch.float32), dim=-1)
    record: list[torch.Tensor] = []
    layer.record = record
    with torch.no_grad():
        out = layer(x, probs)
    v = (x.double() @ layer.vv.weight.double().T).view(B, P, H, D // H).transpose(1, 2)
    want = (probs.double() @ v).transpose(1, 2).reshape(B, P, D)
    torch.testing.assert_close(out.double(), want, rtol=0, atol=ATOL)
    torch.testing.assert_close(record[0], probs, rtol=0, atol=0)


def test_probabilities_are_cast_to_the_value_dtype() -> None:
    """In a float64 layer the recorded probabilities stay float32 and are cast to the values' dtype
    before the product (float32 probabilities: 1e-6 against the float64 reference)."""
    torch.manual_seed(8)
    attn = Attention(D, H).double().eval()
    x, bias, mask = _inputs(9)
    attn.record = []
    with torch.no_grad():
        out = attn(x.double(), None, key_padding_bias(bias, mask, torch.float64))
    assert out.dtype == torch.float64 and attn.record[0].dtype == torch.float32
    torch.testing.assert_close(out, _reference(attn, x, x, bias, mask), rtol=0, atol=1e-6)
    layer = ValueAttention(D, H).double().eval()
    probs = torch.softmax(key_padding_bias(bias, mask, torch.float32), dim=-1)
    with torch.no_grad():
        got = layer(x.double(), probs)
    v = (x.double() @ layer.vv.weight.T).view(B, P, H, D // H).transpose(1, 2)
    want = (probs.double() @ v).transpose(1, 2).reshape(B, P, D)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)  # float32 probs widened exactly


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"^embed_dim 10 is not divisible by num_heads 3$"):
        Attention(10, 3)
