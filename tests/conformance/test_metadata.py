"""A provider's metadata builder: the core fields describe the step, on the
provider's device, and never alias the step's host arrays (the runner may reuse
those buffers for the next step while this one is still in flight)."""
from __future__ import annotations

import numpy as np
import torch

from .kvbuild import plan
from .params import case, conformance

META_CASES = [
    case("decode", seqs=lambda b: [(b - 1, 1), (3 * b, 1), (5, 1)]),
    case("mixed", seqs=lambda b: [(0, b + 1), (b, 1), (2 * b - 1, 7)]),
]


@conformance("metadata_builder", META_CASES, dtypes=(torch.float32,))
def test_metadata_builder_describes_the_step(prov, dtype, case, gen):
    bs = prov.block_size(16)
    p = plan(case.seqs(bs), bs, gen)
    step = p.step
    meta = prov.metadata_builder(prov.device, bs).build(step)
    assert (meta.num_seqs, meta.num_tokens, meta.block_size) == (step.num_seqs, step.num_tokens, bs)
    assert meta.is_decode == bool((step.q_lens == 1).all())
    assert meta.max_q_len >= int(step.q_lens.max()) and meta.max_seq_len >= int(step.seq_lens.max())
    fields = {"q_lens": step.q_lens, "seq_lens": step.seq_lens, "block_tables": step.block_tables,
              "slot_mapping": step.slot_mapping, "q_start_loc": np.concatenate(([0], np.cumsum(step.q_lens)))}
    for name, want in fields.items():
        t = getattr(meta, name)
        assert t.device.type == prov.device.type, f"{name} on {t.device}"
        assert np.array_equal(t.cpu().numpy(), want), name
    snapshot = {k: getattr(meta, k).cpu().clone() for k in fields}
    for a in (step.q_lens, step.seq_lens, step.block_tables, step.slot_mapping):
        a[...] = 12345
    for name, before in snapshot.items():
        assert torch.equal(getattr(meta, name).cpu(), before), f"meta.{name} aliases the step's host array"
