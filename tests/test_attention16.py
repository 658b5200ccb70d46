"""The C++ attention kernel of head width 16 (``models/attention16``) and how it is built
(``jit.cpp_library``): the same function as SDPA, exact zeros at -inf keys, the layouts the models
hand it, where ``Attention`` uses it, and the build cache and fallback."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jettag import jit
from jettag.models import attention16, create_model
from jettag.models.layers import Attention

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++: the C++ kernel is not built")
NEG_INF = float("-inf")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, heads: int
              ) -> torch.Tensor:
    """softmax(q k^T / 4 + bias) v in float64, heads side by side."""
    b, t, d = q.shape
    s = k.shape[1]
    q4, k4, v4 = (x.double().reshape(b, -1, heads, 16).transpose(1, 2) for x in (q, k, v))
    scores = q4 @ k4.transpose(-1, -2) / 4.0 + bias[..., :s].double()
    return (torch.softmax(scores, -1) @ v4).transpose(1, 2).reshape(b, t, d)


def packed(b: int, t: int, s: int, heads: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as views into packed projections (row strides 3d and 2d), as ``Attention`` has them."""
    g = torch.Generator().manual_seed(seed)
    d = 16 * heads
    q = torch.randn(b, t, 3 * d, generator=g)[..., :d]
    kv = torch.randn(b, s, 2 * d, generator=g) * 2.0
    return q, kv[..., :d], kv[..., d:]


# The tolerance: float32 rounding. The kernel's exponential has a relative error of ~1e-7 and it sums
# up to S float32 products of values up to ~9 (float32 spacing 1e-6 there) in its own order, so an
# output near 0 carries the absolute error of its largest terms. Against float64 it is off by as much
# as SDPA is (up to 3.5e-6 in these cases), while a wrong scale, a dropped bias or a key off by one
# moves outputs by 1e-2 or more.
TOL = {"atol": 5e-6, "rtol": 0.0}


@pytest.mark.parametrize(("t", "s"),
                         [(1, 1), (1, 37), (3, 16), (8, 8), (37, 40), (64, 64), (90, 96), (13, 200)])
@pytest.mark.parametrize("heads", [1, 8])
def test_matches_softmax_attention(t: int, s: int, heads: int) -> None:
    b = 5
    q, k, v = packed(b, t, s, heads, seed=t * 1000 + s)
    g = torch.Generator().manual_seed(s)
    bias = torch.randn(b, heads, t, s, generator=g) * 3.0
    real = torch.arange(s)[None] < torch.randint(1, s + 1, (b,), generator=g)[:, None]
    bias.masked_fill_(~real[:, None, None, :], NEG_INF)
    out = attention16.attend(q, k, v, bias, heads)
    torch.testing.assert_close(out.double(), reference(q, k, v, bias, heads), **TOL)
    sdpa = F.scaled_dot_product_attention(*(x.reshape(b, -1, heads, 16).transpose(1, 2) for x in (q, k, v)),
                                          attn_mask=bias)
    torch.testing.assert_close(out, sdpa.transpose(1, 2).reshape(b, t, 16 * heads), **TOL)


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 8)])
def test_broadcast_and_widened_bias(shape: tuple[int, int]) -> None:
    """A bias broadcast over jets or heads (stride 0), wider than the keys (``sdpa_keys``' -inf columns)."""
    b, t, s, heads = 5, 11, 21, 8
    q, k, v = packed(b, t, s, heads, seed=7)
    bias = torch.randn(*shape, t, 32)
    bias[..., s:] = NEG_INF
    bias[..., 3] = NEG_INF
    expanded = bias.expand(b, heads, t, 32)
    out = attention16.attend(q, k, v, expanded if shape == (5, 1) else bias, heads)
    torch.testing.assert_close(out.double(), reference(q, k, v, expanded, heads), **TOL)


@pytest.mark.parametrize("t", [1, 16])
def test_minus_inf_keys_get_weight_exactly_zero(t: int) -> None:
    """Values of 1e38 at -inf keys: any weight above 0 (even exp(-87) ~ 1e-38) would show in the output."""
    b, s, heads = 3, 40, 8
    q, k, v = packed(b, t, s, heads, seed=1)
    bias = torch.zeros(b, heads, t, s)
    bias[..., 30:] = NEG_INF
    bias[..., 5] = -200.0  # far below the row maximum: exp underflows to 0 here too
    v[:, 30:] = 1e38
    out = attention16.attend(q, k, v, bias, heads)
    assert torch.isfinite(out).all()
    expected = reference(q, k[:, :30], v[:, :30], bias[..., :30], heads)
    torch.testing.assert_close(out.double(), expected, **TOL)


def test_rejects_shapes_it_cannot_take() -> None:
    q, k, v = packed(2, 4, 6, 8, seed=0)
    with pytest.raises(ValueError, match="heads of width 16"):
        attention16.attend(q, k, v, torch.zeros(2, 8, 4, 6), heads=4)
    with pytest.raises(ValueError, match="heads of width 16"):
        attention16.attend(q, k, v, torch.zeros(2, 8, 4, 5), heads=8)
    q2, k2, v2 = packed(1, 8, 513, 8, seed=0)
    with pytest.raises(ValueError, match="at most 512"):
        attention16.attend(q2, k2, v2, torch.zeros(1, 8, 8, 513), heads=8)
    with pytest.raises(ValueError, match="contiguous"):
        attention16.attend(q, k, v, torch.zeros(2, 8, 6, 4).transpose(-1, -2), heads=8)


def test_used_only_for_cpu_float32_inference() -> None:
    q = torch.zeros(2, 4, 128)
    bias = torch.zeros(2, 8, 4, 4)
    assert not attention16.usable(q, 4, bias)  # autograd on
    with torch.no_grad():
        assert attention16.usable(q, 4, bias)
        assert not attention16.usable(q.double(), 4, bias)
        assert not attention16.usable(q, 4, bias.bfloat16())
        assert not attention16.usable(q, 4, None)
        assert not attention16.usable(q, 10_000, bias)
        assert not attention16.usable(q, 4, bias.transpose(-1, -2).contiguous().transpose(-1, -2))


def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    seen: list[tuple[int, ...]] = []
    attend = attention16.attend

    def spy(q, k, v, bias, heads):
        seen.append(tuple(q.shape))
        return attend(q, k, v, bias, heads)

    monkeypatch.setattr(attention16, "attend", spy)
    return seen


def test_attention_module_takes_the_kernel_at_inference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = calls(monkeypatch)
    torch.manual_seed(0)
    att = Attention(128, 8, dropout=0.1)
    x = torch.randn(3, 10, 128)
    mask = torch.zeros(3, 8, 10, 16)
    mask[..., 10:] = NEG_INF
    att.train()
    with torch.no_grad():
        att(x, None, mask)  # training mode with dropout: torch's dropout path
    assert seen == []
    att.eval()
    att(x, None, mask)  # autograd on: SDPA
    assert seen == []
    with torch.no_grad():
        fast = att(x, None, mask)
        monkeypatch.setattr(attention16, "usable", lambda *a: False)
        slow = att(x, None, mask)
    assert seen == [(3, 10, 128)]
    torch.testing.assert_close(fast, slow, **TOL)


def test_part_eval_matches_the_sdpa_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole ParT (8 particle blocks, 2 class-attention blocks) at inference, kernel against SDPA."""
    from jettag.data.kinds.particles import example_inputs

    seen = calls(monkeypatch)
    torch.manual_seed(0)
    model = create_model("part", num_classes=10).eval()
    inputs = example_inputs(7, lengths=[5, 37, 64, 23], length=64, seed=3)
    with torch.no_grad():
        fast = model(*inputs)
        monkeypatch.setattr(attention16, "usable", lambda *a: False)
        slow = model(*inputs)
    assert len(seen) == 10
    # through 10 attention layers and 8 MLPs the float32 differences of each kernel call add up
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_build_is_cached_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETTAG_CACHE", str(tmp_path))
    source = Path(attention16.__file__).with_name("attention16.cpp")
    first = jit._build(source)
    assert first.parent == tmp_path / "kernels" and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert jit._build(source) == first and first.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    edited = tmp_path / "attention16.cpp"
    edited.write_text(source.read_text() + "\n// edited\n")
    second = jit._build(edited)
    assert second != first
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == sorted([first.name, second.name])


def test_refuses_a_cached_library_others_can_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETTAG_CACHE", str(tmp_path))
    source = Path(attention16.__file__).with_name("attention16.cpp")
    built = jit._build(source)
    built.chmod(0o775)
    with pytest.raises(OSError, match="writable by others"):
        jit._build(source)
    built.chmod(0o755)
    assert jit._build(source) == built


def test_falls_back_with_one_warning_where_it_cannot_build(tmp_path: Path) -> None:
    """No g++ on PATH: the models run on SDPA after one warning; JETTAG_CPP_KERNELS=0: no warning."""
    script = (
        "import warnings, torch\n"
        "from jettag.models import attention16, create_model\n"
        "from jettag.data.kinds.particles import example_inputs\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    m = create_model('part', num_classes=2).eval()\n"
        "    with torch.no_grad():\n"
        "        m(*example_inputs(7, lengths=[5, 9], length=16, seed=0))\n"
        "        m(*example_inputs(7, lengths=[5, 9], length=16, seed=0))\n"
        "print(attention16._kernel() is None, sum('attention16.cpp' in str(x.message) for x in w))\n"
    )
    base = {**os.environ, "JETTAG_CACHE": str(tmp_path)}
    python_dir = str(Path(sys.executable).parent)
    no_gxx = subprocess.run([sys.executable, "-c", script], env={**base, "PATH": python_dir},
                            capture_output=True, text=True, check=True)
    assert no_gxx.stdout.split() == ["True", "1"], no_gxx.stderr
    off = subprocess.run([sys.executable, "-c", script], env={**base, jit.CPP_KERNELS_ENV: "0"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["True", "0"], off.stderr
    assert not (tmp_path / "kernels").exists()


def test_scale_is_one_over_sqrt_head_width() -> None:
    """Zero bias and one key pair: the weights are softmax(q.k / 4) exactly as written out."""
    q = torch.zeros(1, 1, 16)
    k = torch.zeros(1, 2, 16)
    v = torch.zeros(1, 2, 16)
    q[..., 0], k[0, 0, 0], v[0, 0, 0], v[0, 1, 1] = 2.0, 3.0, 1.0, 1.0
    out = attention16.attend(q, k, v, torch.zeros(1, 1, 1, 2), heads=1)
    w = 1.0 / (1.0 + math.exp(-6.0 / 4.0))
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([w, 1.0 - w]), atol=1e-7, rtol=0)
