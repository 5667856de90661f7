"""Vision-encoder ops: patch_embed, vision_attention (bidirectional varlen, no KV cache,
per-image or per-window cu_seqlens) and mrope (3-D positions with mrope_section).
References here are independent of core/ops/vision.py: convolutions, per-sequence SDPA,
and a per-frequency loop for M-RoPE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import assert_close, ref, untouched
from .params import case, conformance
from .test_rotary import MAX_POS, random_cos_sin_cache

PATCH_CASES = [
    case("clip_p8_c3", N=16, kernel=(8, 8), C=3, E=32, bias=False),
    case("qwen_t2_p14", N=13, kernel=(2, 14, 14), C=3, E=40, bias=False),
    case("bias_p4", N=5, kernel=(4, 4), C=3, E=24, bias=True),
]


@conformance("patch_embed", PATCH_CASES)
def test_patch_embed(prov, dtype, case, gen):
    x = torch.randn(case.N, case.C, *case.kernel, generator=gen).to(prov.device, dtype)
    w = (torch.randn(case.E, case.C, *case.kernel, generator=gen) / 8).to(prov.device, dtype)
    b = torch.randn(case.E, generator=gen).to(prov.device, dtype) if case.bias else None
    with untouched(x=x, w=w):
        out = prov.ops.patch_embed(x, w, b)
    conv = F.conv2d if len(case.kernel) == 2 else F.conv3d
    expect = conv(ref(x), ref(w), ref(b), stride=case.kernel).reshape(case.N, case.E)
    assert out.dtype == dtype
    assert_close(out, expect, dtype, factor=4)


ATTN_CASES = [
    case("one_image_17", lens=[17], H=2, D=16),
    case("three_images", lens=[16, 4, 9], H=4, D=32),
    case("windows_with_empty", lens=[8, 0, 8, 3], H=2, D=40),
    case("long_image", lens=[300], H=3, D=64),
    # a head size past what vendor encoder kernels take (Ascend ATB: 256): their fallback
    case("head_dim_288", lens=[6, 11], H=2, D=288),
]


@conformance("vision_attention", ATTN_CASES)
def test_vision_attention(prov, dtype, case, gen):
    N = sum(case.lens)
    q, k, v = (torch.randn(N, case.H, case.D, generator=gen).to(prov.device, dtype) for _ in range(3))
    cu = torch.tensor([0] + torch.tensor(case.lens).cumsum(0).tolist(), dtype=torch.int32)
    scale = case.D ** -0.5
    with untouched(q=q, k=k, v=v):
        out = prov.ops.vision_attention(q, k, v, cu.to(prov.device), scale)
    parts = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (ref(t)[a:b].transpose(0, 1)[None] for t in (q, k, v))
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, scale=scale)[0].transpose(0, 1))
    assert out.dtype == dtype
    assert_close(out, torch.cat(parts), dtype, factor=2)


MROPE_CASES = [
    case("qwen_16_24_24", T=11, Hq=4, Hk=2, D=128, section=[16, 24, 24]),
    case("tiny_2_5_5", T=7, Hq=4, Hk=4, D=24, section=[2, 5, 5]),
    case("text_rows_equal", T=5, Hq=2, Hk=1, D=64, section=[8, 12, 12], equal=True),
    # Qwen3-VL: axes round-robin over the frequencies (T H W T H W ...), the tail time only
    case("interleaved_24_20_20", T=9, Hq=4, Hk=2, D=128, section=[24, 20, 20], interleaved=True),
    case("interleaved_4_4_4", T=6, Hq=2, Hk=2, D=24, section=[4, 4, 4], interleaved=True),
]


def _mrope_expect(x, pos, cache, section, interleaved=False):
    half = cache.shape[-1] // 2
    axis = [i for i, n in enumerate(section) for _ in range(n)]
    if interleaved:   # transformers' Qwen3-VL: frequency j is height if j%3 == 1 and j < 3*H, width likewise
        axis = [1 if j % 3 == 1 and j < 3 * section[1] else 2 if j % 3 == 2 and j < 3 * section[2] else 0
                for j in range(half)]
    out = x.clone()
    for t in range(x.shape[0]):
        for j in range(half):
            c, s = cache[pos[axis[j], t], j], cache[pos[axis[j], t], half + j]
            x1, x2 = x[t, :, j], x[t, :, half + j]
            out[t, :, j], out[t, :, half + j] = x1 * c - x2 * s, x2 * c + x1 * s
    return out


@conformance("mrope", MROPE_CASES)
def test_mrope(prov, dtype, case, gen):
    q = torch.randn(case.T, case.Hq, case.D, generator=gen).to(prov.device, dtype)
    k = torch.randn(case.T, case.Hk, case.D, generator=gen).to(prov.device, dtype)
    cache = random_cos_sin_cache(case.D, gen)
    pos = torch.randint(0, MAX_POS, (3, case.T), generator=gen)
    if case.get("equal"):
        pos = pos[:1].expand(3, -1).clone()
    il = bool(case.get("interleaved"))
    with untouched(q=q, k=k):
        kw = {"interleaved": True} if il else {}
        qo, ko = prov.ops.mrope(q, k, pos.to(prov.device), cache.to(prov.device), case.section, **kw)
    assert qo.dtype == dtype
    assert_close(qo, _mrope_expect(ref(q), pos, cache, case.section, il), dtype, factor=2, what="q")
    assert_close(ko, _mrope_expect(ref(k), pos, cache, case.section, il), dtype, factor=2, what="k")
    if case.get("equal"):   # equal axes: exactly Ops.rotary at that position
        rq, _ = prov.ops.rotary(q, k, pos[0].to(prov.device), cache.to(prov.device))
        assert_close(qo, ref(rq), dtype, factor=2, what="q vs rotary")
