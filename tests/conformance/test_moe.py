"""moe_route (softmax / sigmoid, renormalize, grouped top-k with and without the
correction bias, routed scaling) and fused_moe (silu / gelu / swiglu_oai, biases,
top-k 1..8) vs the reference; the reference vs per-token loops."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.activation import ACTIVATIONS

from .checks import assert_close, ref, rms, untouched
from .params import case, conformance

REF = Ops()


def distinct_logits(T, E, gen):
    """Router logits with no ties in any dtype: a permutation of E grid values per row
    (integers below 256 over a power of two are exact even in bfloat16)."""
    assert E <= 256
    rows = [torch.randperm(E, generator=gen) for _ in range(T)]
    return (torch.stack(rows).float() - E // 2) / (E / 8)


# name: (E, top_k, keyword arguments) - shaped after the models that use them
ROUTES = {
    "mixtral": (8, 2, dict(scoring="softmax", renormalize=True)),
    "qwen_moe": (60, 4, dict(scoring="softmax", renormalize=False)),
    "top1": (16, 1, dict(scoring="softmax", renormalize=False)),
    "dsv2_grouped": (64, 6, dict(scoring="softmax", renormalize=False, num_groups=8, topk_groups=3,
                                 routed_scaling=16.0)),
    "dsv3_grouped_bias": (256, 8, dict(scoring="sigmoid", renormalize=True, num_groups=8, topk_groups=4,
                                       bias=True, routed_scaling=2.5)),
    "glm_sigmoid_bias": (128, 8, dict(scoring="sigmoid", renormalize=True, bias=True, routed_scaling=2.5)),
    "sigmoid_plain": (32, 4, dict(scoring="sigmoid", renormalize=False)),
    "softmax_bias": (16, 2, dict(scoring="softmax", renormalize=True, bias=True)),   # the contract allows it
}
ROUTE_CASES = [case(f"{name}_T{t}", T=t, E=e, k=k, opts=opts,
                    features=(("grouped",) if "num_groups" in opts else ()) + (("bias",) if opts.get("bias") else ()))
               for name, (e, k, opts) in ROUTES.items() for t in (1, 37)]


def _route_args(case, gen):
    kw = {k: v for k, v in case.opts.items() if k != "bias"}
    if case.opts.get("bias"):
        kw["correction_bias"] = torch.randn(case.E, generator=gen) * 0.3
    return kw


def sorted_by_id(weights, ids):
    ids = ids.long().cpu()
    order = ids.argsort(-1)
    return weights.float().cpu().gather(1, order), ids.gather(1, order)


@conformance("moe_route", ROUTE_CASES)
def test_moe_route(prov, dtype, case, gen):
    logits = distinct_logits(case.T, case.E, gen).to(dtype)
    kw = _route_args(case, gen)
    dkw = {k: (v.to(prov.device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    ld = logits.to(prov.device)
    with untouched(logits=ld):
        w, ids = prov.ops.moe_route(ld, case.k, **dkw)
    assert w.dtype == torch.float32 and ids.dtype == torch.int32 and w.shape == ids.shape == (case.T, case.k)
    rw, rids = REF.moe_route(ref(logits), case.k, **kw)
    (w, ids), (rw, rids) = sorted_by_id(w, ids), sorted_by_id(rw, rids)
    assert torch.equal(ids, rids), "a different set of experts was chosen"
    assert_close(w, rw, torch.float32, factor=5, what="routing weights")


def _brute_force_route(logits, top_k, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                       correction_bias=None, routed_scaling=1.0):
    """One token at a time, with Python lists: the routing rules as written in the model papers."""
    T, E = logits.shape
    all_w, all_ids = [], []
    for t in range(T):
        x = logits[t].double()
        scores = (torch.softmax(x, 0) if scoring == "softmax" else torch.sigmoid(x)).tolist()
        choice = [s + (float(correction_bias[e]) if correction_bias is not None else 0.0) for e, s in enumerate(scores)]
        allowed = list(range(E))
        if num_groups and topk_groups and num_groups > 1:
            size = E // num_groups
            gscore = []
            for g in range(num_groups):
                members = sorted(choice[g * size:(g + 1) * size], reverse=True)
                gscore.append(members[0] if correction_bias is None else members[0] + members[1])
            best = sorted(range(num_groups), key=lambda g: -gscore[g])[:topk_groups]
            allowed = [e for e in range(E) if e // size in best]
        ids = sorted(allowed, key=lambda e: -choice[e])[:top_k]
        w = [scores[e] for e in ids]
        if renormalize:
            w = [v / sum(w) for v in w]
        all_w.append([v * routed_scaling for v in w])
        all_ids.append(ids)
    return torch.tensor(all_w, dtype=torch.float64), torch.tensor(all_ids)


def test_reference_moe_route_matches_a_per_token_loop():
    g = torch.Generator().manual_seed(12)
    for name, (e, k, opts) in ROUTES.items():
        logits = distinct_logits(19, e, g)
        kw = {kk: v for kk, v in opts.items() if kk != "bias"}
        if opts.get("bias"):
            kw["correction_bias"] = torch.randn(e, generator=g) * 0.3
        w, ids = REF.moe_route(logits, k, **kw)
        bw, bids = _brute_force_route(logits, k, **kw)
        (w, ids), (bw, bids) = sorted_by_id(w, ids), sorted_by_id(bw, bids)
        assert torch.equal(ids, bids), name
        torch.testing.assert_close(w, bw.float(), atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_reference_grouped_routing_stays_inside_the_chosen_groups():
    # Brute force aside, the defining property: every chosen expert lies in one of topk_groups groups.
    g = torch.Generator().manual_seed(13)
    w, ids = REF.moe_route(distinct_logits(50, 64, g), 6, num_groups=8, topk_groups=2)
    groups = (ids.long() // 8)
    assert all(len(set(row.tolist())) <= 2 for row in groups)


# ---- fused_moe ---------------------------------------------------------------------

MOE_CASES = [
    case(f"T{t}_H{h}_I{i}_E{e}_k{k}_{act}{'_bias' if b else ''}", T=t, H=h, I=i, E=e, k=k, act=act, bias=b,
         features=(act,) + (("bias",) if b else ()))
    for t, h, i, e, k, act, b in [
        (1, 64, 32, 8, 1, "silu", False),
        (7, 67, 48, 8, 2, "silu", True),
        (33, 64, 32, 16, 4, "gelu", False),
        (3, 64, 40, 16, 3, "gelu_tanh", True),
        (5, 96, 64, 8, 8, "swiglu_oai", True),
        (100, 64, 32, 32, 6, "silu", False),
        (64, 128, 64, 8, 2, "swiglu_oai", False),
    ]
]


def _moe_inputs(case, dtype, gen):
    E, H, I, T, k = case.E, case.H, case.I, case.T, case.k
    x = torch.randn(T, H, generator=gen).to(dtype)
    w13 = (torch.randn(E, 2 * I, H, generator=gen) / H ** 0.5 * 2).to(dtype)
    w2 = (torch.randn(E, H, I, generator=gen) / I ** 0.5).to(dtype)
    b13 = (torch.randn(E, 2 * I, generator=gen) * 0.5).to(dtype) if case.bias else None
    b2 = (torch.randn(E, H, generator=gen) * 0.5).to(dtype) if case.bias else None
    ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)]).to(torch.int32)
    w = torch.rand(T, k, generator=gen) + 0.1
    return x, w13, w2, b13, b2, w / w.sum(-1, keepdim=True), ids


@conformance("fused_moe", MOE_CASES)
def test_fused_moe(prov, dtype, case, gen):
    x, w13, w2, b13, b2, tw, tid = _moe_inputs(case, dtype, gen)
    d = [None if t is None else t.to(prov.device) for t in (x, w13, w2, b13, b2, tw, tid)]
    with untouched(x=d[0], w13=d[1], w2=d[2], topk_weights=d[5], topk_ids=d[6]):
        out = prov.ops.fused_moe(d[0], d[1], d[2], d[5], d[6], activation=case.act, w13_bias=d[3], w2_bias=d[4])
    expect = REF.fused_moe(ref(x), ref(w13), ref(w2), tw, tid, activation=case.act,
                           w13_bias=ref(b13), w2_bias=ref(b2))
    assert out.dtype == dtype
    assert_close(out, expect, dtype, factor=3, scale=rms(expect))


def test_reference_fused_moe_matches_a_per_token_loop():
    g = torch.Generator().manual_seed(14)
    for act in ACTIVATIONS:
        c = case("x", T=6, H=24, I=16, E=8, k=3, bias=True)
        x, w13, w2, b13, b2, tw, tid = _moe_inputs(c, torch.float32, g)
        out = REF.fused_moe(x, w13, w2, tw, tid, activation=act, w13_bias=b13, w2_bias=b2)
        want = torch.zeros(6, 24, dtype=torch.float64)
        for t in range(6):
            for j in range(3):
                e = int(tid[t, j])
                h = w13[e].double() @ x[t].double() + b13[e].double()
                gate, up = h[:16], h[16:]
                a = ACTIVATIONS[act](torch.cat((gate, up))[None])[0]   # the activation's own contract is tested apart
                want[t] += float(tw[t, j]) * (w2[e].double() @ a + b2[e].double())
        torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{act}: {m}")
