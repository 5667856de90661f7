"""Every declared release x SoC x eager/graph x (dense, MoE, W8A8, W4A16) runs or is refused up front.

Each (release, SoC, mode) runs one MiniModel with a layer per offered feature (prefill,
then decode steps; in graph mode the decode steps replay captured graphs) on the strict emulation of that torch_npu release
(its pinned op-plugin's schemas, tests/vendors/emulation/npu/releases.json) or
torch_mlu_ops release (its export list), and compares every step with the same model
on the CPU backend's reference operators.  A refused cell must be one the plugin
declares it refuses, and the engine must refuse it before loading anything.
"""
from __future__ import annotations

import functools

import pytest
import torch

from halinfer.plugins.ascend import support as ascend_support
from halinfer.plugins.cpu.backend import CpuBackend

from .conftest import make_ascend, make_camb
from .emulation.npu import NEWEST, OLDEST, RELEASES as RELEASES_JSON
from .minimodel import MiniModel, run

# One release per distinct op set of releases.json (releases sharing a set are the same to the
# emulation): oldest (7b9ce1c), the last without rotary_mode (3ec6c1f), the first with it (7dee02b),
# a 26.0 release (6ffd6e2), newest (09024aa).  The other declared releases run as a slow extra.
RELEASES = [OLDEST, "v2.6.0-7.1.0", "v2.6.0-7.2.0", "v2.9.0-26.0.0", NEWEST]
OTHER_RELEASES = [pytest.param(r, marks=pytest.mark.slow) for r in RELEASES_JSON["releases"] if r not in RELEASES]
SOCS = ["A2", "A3", "310P"]
MODES = ["eager", "graph"]
FEATURES = {"dense": None, "moe": None, "w8a8": "w8a8", "w4a16": "awq"}   # feature -> weight format
TMO_VERSIONS = ["1.5.0+torch2.4", "1.12.1+torch2.11"]
STEPS = dict(prompt_lens=(5, 17), decode_steps=2, sizes=(2,))
TOL = 6e-2   # max error relative to the largest output, float16 through int8 activations


@functools.lru_cache(None)
def reference(kinds: tuple) -> tuple:
    cpu = CpuBackend()
    return tuple(run(cpu, MiniModel(cpu, mlp=kinds, block_size=16), "eager", **STEPS)[0])


def check_cell(backend, mode, refused_why) -> dict[str, str]:
    """Run one model whose layers use every feature the backend offers in this mode (one layer
    each) against the reference; returns {feature: reason} for the ones it refuses."""
    refused = {}
    for feature, fmt in FEATURES.items():
        what = mode if mode not in backend.graph_modes else (fmt if fmt and fmt not in backend.weight_quant else None)
        if what:
            refused[feature] = refused_why(what)
            assert refused[feature], f"{feature}/{mode} is not offered, but the plugin gives no reason for refusing it"
    kinds = tuple(f for f in FEATURES if f not in refused)
    if not kinds:
        return refused
    got, _ = run(backend, MiniModel(backend, mlp=kinds), mode, **STEPS)
    for i, (a, b) in enumerate(zip(got, reference(kinds))):
        err = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-6)
        assert err < TOL, f"{kinds}, step {i}: relative error {err:.2e}"
    return refused


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("soc", SOCS)
@pytest.mark.parametrize("release", RELEASES + OTHER_RELEASES)
def test_ascend_release_runs_every_feature_or_refuses_it(npu_emulation, release, soc, mode):
    b = make_ascend(npu_emulation, release=release, soc=soc, real_version=True)
    refused = check_cell(b, mode, lambda what: ascend_support.refusal(b.soc.variant, what))
    # only the 300I Duo refuses anything: eager decode, and W8A8 / W4A16
    want = {} if soc != "310P" else (dict.fromkeys(FEATURES) if mode == "eager" else dict.fromkeys(("w8a8", "w4a16")))
    assert set(refused) == set(want), refused


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tmo_version", TMO_VERSIONS)
def test_camb_release_runs_every_feature_or_refuses_it(mlu_emulation, tmo_version, mode):
    from halinfer.plugins.camb import support as camb_support

    refused = check_cell(make_camb(mlu_emulation, tmo_version=tmo_version), mode, camb_support.refusal)
    assert set(refused) == {"w4a16"}, refused


def test_the_engine_refuses_what_the_300i_duo_does_not_offer(npu_emulation, tmp_path):
    from halinfer import LLM
    from halinfer.testing.tiny import save_tiny_model

    from .test_models_emulated import registered

    b = make_ascend(npu_emulation, soc="310P")
    model = save_tiny_model("llama", str(tmp_path), seed=0, hidden_size=128, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64)
    with registered(b), pytest.raises(ValueError, match="eager"):
        LLM(model, device="ascend", dtype=torch.float16, num_kv_blocks=8, max_model_len=128, enforce_eager=True)
