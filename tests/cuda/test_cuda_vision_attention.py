"""The CUDA table's vision attention (kernels/vision_attention.py) against the core's float32
reference: packed sequences of mixed lengths (Qwen2.5-VL's windows: runs of equal length
broken by smaller edge windows; InternVL tiles; one image), an empty sequence, head dims
64 and 80.  16-bit inputs run varlen flash attention on a GPU (where torch has it) and SDPA
over equal-length runs everywhere; float32 inputs go to the reference."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import Ops

LENGTHS = {
    "one-image": [196],
    "windows": [64] * 5 + [48, 64, 64, 32, 16, 64],
    "tiles": [257] * 3 + [0] + [257],
    "odd": [7, 1, 33, 33, 2],
}
TOL = {torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


@pytest.mark.parametrize("impl", ["auto", "sdpa"])
@pytest.mark.parametrize("D", [64, 80])
@pytest.mark.parametrize("name", list(LENGTHS))
def test_vision_attention_matches_reference(target, gen, impl, D, name):
    from halinfer.kernels import vision_attention as va
    from halinfer.kernels.triton.ops import TritonOps

    lens = LENGTHS[name]
    N, H = sum(lens), 4
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    q, k, v = (torch.randn(N, H, D, generator=gen) for _ in range(3))
    scale = D ** -0.5
    want = Ops().vision_attention(q, k, v, cu, scale)
    dev = target.device
    args = [t.to(dev, target.dtype) for t in (q, k, v)] + [cu.to(dev), scale]
    if target.dtype == torch.float32:
        assert va.vision_attention(*args, impl=impl) is None     # float32 keeps the reference
        got = TritonOps().vision_attention(*args)
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)
        return
    va._VARLEN_BROKEN.clear()
    got = va.vision_attention(*args, impl=impl)
    err = float((got.cpu().float() - want).abs().max() / want.abs().max())
    assert err < TOL[target.dtype], f"max relative error {err:.2e}"
    if impl == "auto" and dev.type == "cuda" and va._varlen() is not None:
        assert not va._VARLEN_BROKEN, f"varlen_attn exists but failed: {va._VARLEN_BROKEN}"
    # the op table takes the same path
    torch.testing.assert_close(TritonOps().vision_attention(*args).cpu(), va.vision_attention(*args).cpu())


def test_runs_split_at_length_changes():
    from halinfer.kernels.vision_attention import _runs

    assert _runs([0, 4, 8, 12, 14, 18, 22]) == [(0, 12, 4), (12, 14, 2), (14, 22, 4)]
    assert _runs([0, 0, 3, 3]) == [(0, 3, 3)]
