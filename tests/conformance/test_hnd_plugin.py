"""The test-only HND plugin (hnd_plugin/) registers through an entry point of a
temporary distribution, resolves like any device, builds metadata with host-side
int32 lengths, and its attention really reads them.  The op suite itself runs
against it as the "hndsim" provider (extra_providers/hnd.py)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from halinfer.core.device import DeviceError, list_devices, resolve_device
from halinfer.core.ops import Ops

from .kvbuild import layer_kv, plan, poisoned_cache, write_rows
from halinfer.core.plugin import PLUGINS_ENV

from .providers import SELECT_ENV, collect_providers
from .tempdist import HND_DIST, HND_MODULE, HND_NAME, hnd_plugin_installed

pytestmark = pytest.mark.usefixtures("unrestricted_plugins")


def test_hnd_plugin_registers_through_an_entry_point_and_resolves(tmp_path):
    with hnd_plugin_installed(tmp_path) as reg:
        rec = next(r for r in reg.records if r.name == HND_NAME)
        assert rec.error is None and rec.distribution == HND_DIST
        r = resolve_device(HND_NAME)
        assert r.backend.kv_layout == "HND"
        assert resolve_device("hnd:0").backend is r.backend                       # its alias
        assert r.backend.kv_cache_shape(10, 16, 2, 64) == (10, 2, 16, 64)
        assert {d["name"]: d for d in list_devices()}[HND_NAME]["kv_layout"] == "HND"
        assert resolve_device("auto").backend.name != HND_NAME                   # priority -100
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(HND_NAME)
    assert HND_MODULE not in sys.modules and not any(str(tmp_path) in p for p in sys.path)


@pytest.fixture
def hnd(tmp_path):
    """The plugin's backend, installed for this test."""
    with hnd_plugin_installed(tmp_path):
        backend = resolve_device(HND_NAME).backend
        backend.ops   # its ops module is imported lazily: while the plugin is importable
        yield backend


def test_the_suite_runs_the_hnd_plugins_own_ops():
    found = [p for p in collect_providers() if p.name == HND_NAME]
    assert found, "the hndsim provider is missing from the conformance suite"
    p = found[0]
    if p.unavailable and (PLUGINS_ENV in p.unavailable or SELECT_ENV in p.unavailable):
        pytest.skip(p.unavailable)   # the run left it out on purpose
    assert p.unavailable is None, p.unavailable
    assert p.kv_layout == "HND"
    for op in ("store_kv", "paged_attention"):
        assert getattr(type(p.ops), op) is not getattr(Ops, op), f"{op} is the core reference, not the plugin's"


def _step():
    g = torch.Generator().manual_seed(21)
    p = plan([(20, 3), (33, 1), (0, 5)], 16, g)
    kc, _ = poisoned_cache("HND", p.num_blocks, 16, 2, 32, torch.float32, "cpu")
    vc, _ = poisoned_cache("HND", p.num_blocks, 16, 2, 32, torch.float32, "cpu")
    for i in range(3):
        for c in (kc, vc):
            write_rows(c, "HND", p.seq_slots(i), torch.randn(p.seq_lens[i], 2, 32, generator=g), 16)
    return p, torch.randn(p.step.num_tokens, 8, 32, generator=g), layer_kv(kc, vc, "HND")


def test_hnd_metadata_carries_host_side_int32_lengths(hnd):
    p, _, _ = _step()
    meta = hnd.metadata_builder(torch.device("cpu"), 16).build(p.step)
    assert meta.host_seq_lens.device.type == "cpu" and meta.host_seq_lens.dtype == torch.int32
    assert meta.host_seq_lens.tolist() == p.seq_lens and meta.host_q_lens == p.q_lens
    assert meta.seq_lens.tolist() == p.seq_lens    # the core's fields are still there


def test_hnd_attention_reads_the_host_lengths_not_the_device_ones(hnd):
    p, q, kv = _step()
    meta = hnd.metadata_builder(torch.device("cpu"), 16).build(p.step)
    want = hnd.ops.paged_attention(q, kv, meta, scale=1 / math.sqrt(32))
    meta.seq_lens = torch.zeros_like(meta.seq_lens)
    meta.q_start_loc = torch.zeros_like(meta.q_start_loc)
    torch.testing.assert_close(hnd.ops.paged_attention(q, kv, meta, scale=1 / math.sqrt(32)), want)
    meta.host_seq_lens = torch.from_numpy(np.array(p.seq_lens, dtype=np.int32) - 1)
    with pytest.raises(AssertionError):   # one key fewer per sequence: a different answer
        torch.testing.assert_close(hnd.ops.paged_attention(q, kv, meta, scale=1 / math.sqrt(32)), want)
