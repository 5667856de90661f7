"""AscendMetadataBuilder: FIA's host-side lists, int32 device tensors, the BSND padding index."""
from __future__ import annotations

import numpy as np
import torch

from halinfer.core.attention import StepInputs
from halinfer.plugins.ascend.metadata import AscendMetadataBuilder


def _step(q_lens, seq_lens, bs=128):
    q_lens, seq_lens = np.array(q_lens, np.int32), np.array(seq_lens, np.int32)
    tables = np.arange(1, 1 + 3 * len(q_lens), dtype=np.int32).reshape(len(q_lens), 3)
    slots = []
    for i, (q, n) in enumerate(zip(q_lens, seq_lens)):
        pos = np.arange(n - q, n)
        slots.append(tables[i][pos // bs].astype(np.int64) * bs + pos % bs)
    return StepInputs(q_lens, seq_lens, tables, np.concatenate(slots), bs)


def test_prefill_lists_and_padding_index():
    step = _step([3, 1, 4], [3, 130, 6])
    m = AscendMetadataBuilder(torch.device("cpu"), 128).build(step)
    assert m.q_cum_host == [3, 4, 8] and m.q_lens_host == [3, 1, 4] and m.kv_lens_host == [3, 130, 6]
    assert all(type(v) is int for v in m.q_cum_host + m.kv_lens_host)      # plain ints: FIA's SymInt[]
    assert m.slot_mapping.dtype == torch.int32 and m.block_tables.dtype == torch.int32
    assert m.slot_mapping.tolist() == step.slot_mapping.tolist()
    assert m.has_history and not m.is_decode
    # token t of sequence b lands at row b * max_q + local index (max_q = 4)
    assert m.pad_index.tolist() == [0, 1, 2, 4, 8, 9, 10, 11]


def test_decode_has_no_padding_index_and_no_history_flag_for_fresh_sequences():
    m = AscendMetadataBuilder(torch.device("cpu"), 128).build(_step([1, 1], [7, 1]))
    assert m.is_decode and m.pad_index is None and m.q_cum_host == [1, 2] and m.kv_lens_host == [7, 1]
    m2 = AscendMetadataBuilder(torch.device("cpu"), 128).build(_step([5, 2], [5, 2]))
    assert not m2.has_history


def test_copy_into_carries_the_host_lists_to_a_captured_graphs_metadata():
    b = AscendMetadataBuilder(torch.device("cpu"), 128)
    static = b.build(_step([1, 1], [1, 1]))
    seq_lens_tensor = static.seq_lens
    b.build(_step([1, 1], [40, 300])).copy_into(static)
    assert static.kv_lens_host == [40, 300] and static.seq_lens is seq_lens_tensor
    assert static.seq_lens.tolist() == [40, 300]
