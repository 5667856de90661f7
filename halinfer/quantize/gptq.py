"""GPTQ (Frantar et al., 2022): quantize a weight column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse Hessian of the
layer's squared output error, H = 2/n X^T X (X the inputs, n tokens).

Steps, per linear: H += 1% of its mean diagonal (damping); columns whose input is always
zero are dropped (weight set to 0); U = the upper Cholesky factor of H^-1; columns are
done in blocks of 128, the error of column j, (w_j - q_j) / U_jj, updates the rest of the
block at once and the columns after the block by one matrix product.  Scale and zero of
each group of ``group_size`` columns are chosen when its first column is reached, from the
weights as updated so far.  By default no act-order (desc_act = false), so g_idx = k //
group_size; with ``act_order`` (``--act-order``, desc_act = true) the columns are processed
by descending diag(H), groups are runs of ``group_size`` columns in that order, and g_idx
records each input's group.

Written in the GPTQ v1 layout: qweight int32 [K*b/32, N] (packed along K), qzeros int32
[G, N*b/32] holding zero - 1, scales float16 [G, N], g_idx int32 [K].
"""
from __future__ import annotations

import torch

from ..core.ops.gptq import gptq_pack_cols, gptq_pack_rows
from .capture import LINEARS, GROUPS
from .grid import group_params, quantize_with


def hessian(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (2.0 / x.shape[0]) * (x.t() @ x)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, group: int, sym: bool, block: int = 128,
                  damp: float = 0.01, act_order: bool = False):
    """w [N, K], h [K, K] -> (q int64 [N, K], scale [N, G], zero int64 [N, G], dense [N, K], g_idx int64 [K]).

    With ``act_order`` the columns are processed by descending diag(H) and a group is ``group``
    consecutive columns of that order: input k belongs to group g_idx[k] (not k // group).
    """
    N, K = w.shape
    if K % group:
        raise ValueError(f"in_features {K} is not a multiple of the group size {group}")
    W = w.double().clone()
    H = h.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    G = K // group
    Q = torch.zeros(N, K, dtype=torch.long)
    scale = torch.zeros(N, G)
    zero = torch.zeros(N, G, dtype=torch.long)
    for a in range(0, K, block):
        b = min(a + block, K)
        W1, E = W[:, a:b].clone(), torch.zeros(N, b - a, dtype=W.dtype)
        for j in range(b - a):
            col = a + j
            if col % group == 0:
                g = col // group
                # the group's columns as updated so far: the block's own from W1, later ones from W
                cols = torch.cat([W1[:, j:], W[:, b:]], 1)[:, :group]
                scale[:, g], zero[:, g] = group_params(cols.float(), bits, sym)
            g = col // group
            q = quantize_with(W1[:, j:j + 1].float(), scale[:, g], zero[:, g], bits)[:, 0]
            Q[:, col] = q
            dq = (q - zero[:, g]).double() * scale[:, g].double()
            err = (W1[:, j] - dq) / U[col, col]
            W1[:, j:] -= err[:, None] * U[col, col:b][None, :]
            E[:, j] = err
        W[:, b:] -= E @ U[a:b, b:]
    inv = torch.argsort(perm)
    Q = Q[:, inv]                        # back to the input order
    g_idx = inv // group                 # input k was processed at position inv[k]
    dense = (Q - zero[:, g_idx]).float() * scale[:, g_idx]
    return Q, scale, zero, dense, g_idx


class GPTQ:
    name = "gptq"
    needs_calibration = True

    def __init__(self, group_size: int = 128, bits: int = 4, sym: bool = True, act_order: bool = False, **_):
        if bits not in (4, 8):
            raise ValueError(f"--bits {bits} is not supported for gptq; supported: 4, 8")
        self.group, self.bits, self.sym, self.act_order = group_size, bits, sym, act_order

    def config(self) -> dict:
        return {"quant_method": "gptq", "bits": self.bits, "group_size": self.group, "desc_act": self.act_order,
                "sym": self.sym, "damp_percent": 0.01, "static_groups": False, "true_sequential": False,
                "checkpoint_format": "gptq"}

    @torch.no_grad()
    def quantize_layer(self, layer, inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        hs = {g: hessian(x) for g, x in inputs.items()}
        group_of = {n: g for g, (_, names) in GROUPS.items() for n in names}
        mask = (1 << self.bits) - 1
        for n in LINEARS:
            mod = layer.get_submodule(n)
            q, scale, zero, dense, g_idx = gptq_quantize(mod.weight.float(), hs[group_of[n]], self.bits, self.group,
                                                         self.sym, act_order=self.act_order)
            mod.weight.data.copy_(dense)
            out[n] = {"qweight": gptq_pack_rows(q.t(), self.bits),
                      "qzeros": gptq_pack_cols(((zero - 1) & mask).t(), self.bits),  # v1 stores zero - 1
                      "scales": scale.t().half().contiguous(),
                      "g_idx": g_idx.to(torch.int32)}
        return out
