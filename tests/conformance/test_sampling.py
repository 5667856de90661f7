"""apply_penalties and sample.

sample is checked for what a user relies on: greedy rows are the argmax; a
request's seeded draw depends only on (seed, offset), not on the rest of the
batch; the empirical frequencies of many draws match the softmax of the filtered
logits (chi-square at a fixed seed set), and top-k / top-p / min-p never let a
masked token through.  A provider that declares ``exact_sampling`` must also
draw exactly the reference's tokens.
"""
from __future__ import annotations

import math

import pytest
import torch

from halinfer.core.ops import Ops, SamplingTensors

from .checks import ref
from .params import case, conformance

REF = Ops()
F32 = (torch.float32,)   # both ops take float32 logits by contract


def make_st(B, device, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seeds=0, offsets=0) -> SamplingTensors:
    def col(v, dtype):
        t = v if isinstance(v, torch.Tensor) else torch.full((B,), v)
        return t.to(device=device, dtype=dtype)
    st = SamplingTensors(col(temperature, torch.float32), col(top_k, torch.int64), col(top_p, torch.float32),
                         col(min_p, torch.float32), col(seeds, torch.int64), col(offsets, torch.int64),
                         False, False, False, False)
    V = 1 << 62
    st.all_greedy = bool((st.temperature == 0).all())
    st.any_top_k = bool(((st.top_k > 0) & (st.top_k < V)).any())
    st.any_top_p = bool((st.top_p < 1).any())
    st.any_min_p = bool((st.min_p > 0).any())
    return st


# ---- apply_penalties ------------------------------------------------------------------

PEN_CASES = [case(f"B{b}_V{v}", B=b, V=v) for b, v in ((1, 100), (5, 1000), (3, 32001))]


def _penalty_inputs(case, gen):
    B, V = case.B, case.V
    logits = torch.randn(B, V, generator=gen) * 3
    prompt = torch.rand(B, V, generator=gen) < 0.1
    counts = torch.randint(0, 4, (B, V), generator=gen) * (torch.rand(B, V, generator=gen) < 0.05)
    rep = 1 + torch.rand(B, generator=gen) * 0.5
    pres, freq = torch.rand(B, generator=gen) * 0.5, torch.rand(B, generator=gen) * 0.3
    rep[0], pres[0], freq[0] = 1.0, 0.0, 0.0          # a row with every penalty off
    return logits, prompt, counts, rep, pres, freq


@conformance("apply_penalties", PEN_CASES, dtypes=F32)
def test_apply_penalties(prov, dtype, case, gen):
    inputs = _penalty_inputs(case, gen)
    logits, *rest = [t.clone().to(prov.device) for t in inputs]   # clone: .to() may alias on the CPU
    out = prov.ops.apply_penalties(logits, *rest)
    expect = REF.apply_penalties(*[t.clone() for t in inputs])
    torch.testing.assert_close(out.cpu(), expect, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits.cpu(), expect, atol=1e-6, rtol=1e-6, msg=lambda m: f"not in place: {m}")
    torch.testing.assert_close(out[0].cpu(), inputs[0][0], msg=lambda m: f"penalties off changed the row: {m}")


def test_reference_penalties_match_a_scalar_loop():
    g = torch.Generator().manual_seed(15)
    logits, prompt, counts, rep, pres, freq = _penalty_inputs(case("x", B=4, V=50), g)
    out = REF.apply_penalties(logits.clone(), prompt, counts, rep, pres, freq)
    for b in range(4):
        for v in range(50):
            x, c = float(logits[b, v]), int(counts[b, v])
            if prompt[b, v] or c > 0:                      # repetition (CTRL): prompt and output
                x = x / float(rep[b]) if x > 0 else x * float(rep[b])
            x -= float(pres[b]) * (c > 0) + float(freq[b]) * c   # presence / frequency: output only
            assert abs(float(out[b, v]) - x) < 1e-5, (b, v)


# ---- sample ---------------------------------------------------------------------------

def allowed_probs(logits_row, temp, top_k=0, top_p=1.0, min_p=0.0):
    """float64 [V]: the distribution sample must follow (temperature, then top-k, then
    top-p over what top-k kept, then min-p), written independently of the reference."""
    p = torch.softmax(logits_row.double() / temp, 0)
    V = p.shape[0]
    order = p.argsort(descending=True)
    keep = torch.ones(V, dtype=torch.bool)
    if 0 < top_k < V:
        keep[order[top_k:]] = False
    if top_p < 1:
        q = torch.where(keep, p, torch.zeros_like(p))
        q = q / q.sum()
        before = 0.0
        for t in order.tolist():
            if before >= top_p:
                keep[t] = False
            before += float(q[t])
    if min_p > 0:
        keep &= p >= min_p * p.max()
    p = torch.where(keep, p, torch.zeros_like(p))
    return p / p.sum()


def chi2_bound(df: int, z: float = 4.0) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) at a normal z (z=4: p ~ 3e-5)."""
    a = 2.0 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


def assert_follows(tokens, probs, what):
    n, V = tokens.numel(), probs.numel()
    counts = torch.bincount(tokens.cpu(), minlength=V).double()
    banned = (probs == 0) & (counts > 0)
    assert not banned.any(), f"{what}: drew masked tokens {banned.nonzero().flatten().tolist()}"
    exp = probs * n
    live = exp > 0
    stat = float(((counts[live] - exp[live]) ** 2 / exp[live]).sum())
    df = int(live.sum()) - 1
    if df > 0:
        assert stat < chi2_bound(df), f"{what}: chi-square {stat:.1f} over {df} dof (bound {chi2_bound(df):.1f})"


FILTERS = {
    "plain_t1": dict(temp=1.0),
    "t0.6": dict(temp=0.6),
    "topk3": dict(temp=1.0, top_k=3),
    "topp0.7": dict(temp=0.9, top_p=0.7),
    "minp0.2": dict(temp=1.2, min_p=0.2),
    "all_filters": dict(temp=0.8, top_k=6, top_p=0.9, min_p=0.05),
}
FREQ_CASES = [case(f"{name}_{mode}", filt=f, mode=mode) for name, f in FILTERS.items()
              for mode in ("offsets", "seeds")]


def _draws(ops, device, logits_row, filt, mode, n=6000):
    B = n
    idx = torch.arange(n)
    st = make_st(B, device, temperature=filt["temp"], top_k=filt.get("top_k", 0), top_p=filt.get("top_p", 1.0),
                 min_p=filt.get("min_p", 0.0),
                 seeds=idx * 7919 + 3 if mode == "seeds" else 12345, offsets=idx if mode == "offsets" else 5)
    return ops.sample(logits_row.expand(B, -1).contiguous().to(device), st)


def _freq_logits(gen, V=12):
    return torch.randn(V, generator=gen) * 1.5


@conformance("sample", FREQ_CASES, dtypes=F32)
def test_sample_frequencies_follow_filtered_softmax(prov, dtype, case, gen):
    row = _freq_logits(gen)
    f = case.filt
    probs = allowed_probs(row, f["temp"], f.get("top_k", 0), f.get("top_p", 1.0), f.get("min_p", 0.0))
    tokens = _draws(prov.ops, prov.device, row, f, case.mode)
    assert tokens.dtype == torch.int64 and tokens.shape == (6000,)
    assert_follows(tokens, probs, f"{case.id}")


@pytest.mark.parametrize("name", list(FILTERS))
def test_reference_sample_frequencies_follow_filtered_softmax(name):
    # Several logit rows per filter: the reference's distribution, not one lucky draw.
    g = torch.Generator().manual_seed(16)
    f = FILTERS[name]
    for _ in range(3):
        row = _freq_logits(g)
        probs = allowed_probs(row, f["temp"], f.get("top_k", 0), f.get("top_p", 1.0), f.get("min_p", 0.0))
        assert_follows(_draws(REF, "cpu", row, f, "offsets"), probs, name)


SAMPLE_CASES = [case(f"B{b}_V{v}", B=b, V=v) for b, v in ((1, 7), (9, 1000), (24, 32001))]


def _mixed_batch(B, V, gen, device):
    """Rows with every combination of greedy / temperature / top-k / top-p / min-p."""
    logits = torch.randn(B, V, generator=gen) * 2
    r = torch.arange(B)
    temp = torch.where(r % 4 == 0, 0.0, 0.5 + torch.rand(B, generator=gen))
    top_k = torch.where(r % 3 == 1, torch.randint(1, max(2, V // 2), (B,), generator=gen), 0)
    top_p = torch.where(r % 5 == 2, 0.5 + 0.4 * torch.rand(B, generator=gen), 1.0)
    min_p = torch.where(r % 7 == 3, 0.1, 0.0)
    seeds = torch.randint(0, 1 << 62, (B,), generator=gen)
    offsets = torch.randint(0, 4096, (B,), generator=gen)
    return logits, dict(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, seeds=seeds, offsets=offsets)


@conformance("sample", SAMPLE_CASES, dtypes=F32)
def test_sample_greedy_rows_are_argmax(prov, dtype, case, gen):
    logits, kw = _mixed_batch(case.B, case.V, gen, prov.device)
    out = prov.ops.sample(logits.to(prov.device), make_st(case.B, prov.device, **dict(kw, temperature=0.0)))
    assert torch.equal(out.cpu(), logits.argmax(-1)), "all-greedy batch"
    out = prov.ops.sample(logits.to(prov.device), make_st(case.B, prov.device, **kw)).cpu()
    greedy = kw["temperature"] == 0
    assert torch.equal(out[greedy], logits.argmax(-1)[greedy]), "greedy rows of a mixed batch"


@conformance("sample", SAMPLE_CASES, dtypes=F32)
def test_sample_draw_depends_only_on_seed_and_offset(prov, dtype, case, gen):
    logits, kw = _mixed_batch(case.B, case.V, gen, prov.device)
    base = prov.ops.sample(logits.to(prov.device), make_st(case.B, prov.device, **kw)).cpu()
    # The same requests in another order, beside other requests, in a larger batch.
    perm = torch.randperm(case.B, generator=gen)
    extra_logits, extra_kw = _mixed_batch(5, case.V, gen, prov.device)
    big_logits = torch.cat((extra_logits[:2], logits[perm], extra_logits[2:]))
    big_kw = {k: torch.cat((extra_kw[k][:2], v[perm], extra_kw[k][2:])) for k, v in kw.items()}
    again = prov.ops.sample(big_logits.to(prov.device), make_st(case.B + 5, prov.device, **big_kw)).cpu()
    assert torch.equal(again[2:2 + case.B], base[perm]), "a request's draw changed with the batch around it"
    # Sanity that the draw is random at all: successive offsets of one request vary.
    n = 64
    st = make_st(n, prov.device, temperature=1.0, seeds=kw["seeds"][0], offsets=torch.arange(n))
    draws = prov.ops.sample(torch.zeros(n, case.V, device=prov.device), st).cpu()
    assert draws.unique().numel() > 1, "offsets 0..63 of one seed all drew the same token from a uniform row"


@conformance("sample", SAMPLE_CASES, dtypes=F32)
def test_sample_matches_reference_tokens(prov, dtype, case, gen):
    if not prov.exact_sampling:
        pytest.skip(f"{prov.name} draws from its own RNG (exact_sampling=False); statistics are checked instead")
    logits, kw = _mixed_batch(case.B, case.V, gen, prov.device)
    out = prov.ops.sample(logits.to(prov.device), make_st(case.B, prov.device, **kw)).cpu()
    assert torch.equal(out, REF.sample(ref(logits), make_st(case.B, "cpu", **kw)))
