"""Vision-language rows the seed's "other platforms" table lists, on the emulated vendor
stacks, eager and with decode graphs, against transformers (testing/hf_vlm.assert_vlm_close):
Qwen2-VL, Qwen2.5-VL and InternVL on Ascend Atlas 800T A2 (and 300I Duo where listed),
MACA, and Cambricon (InternVL; the seed says No for Qwen2-VL / Qwen2.5-VL there).  The
vision tower runs the ops contract's vision ops (the vendors declare no override: the
reference runs on their devices); text head dim 64 takes the vendor attention paths.
The default run keeps one eager case per vendor stack; graphs, 300I Duo and MACA (Triton
under the interpreter) are marked slow: ``-m ''`` runs them all (about 5 minutes on 2 cores)."""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM
from halinfer.testing.hf_vlm import assert_vlm_close, hf_vlm
from halinfer.testing.tiny_vlm import SAVERS
from halinfer.testing.vlm_cases import vlm_prompts

from .conftest import make_ascend, make_camb, make_maca
from .support_records import note
from .test_models_emulated import registered

D64 = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64, intermediate_size=192)
MODELS = {
    "qwen2-vl-d64": ("qwen2-vl", {**D64, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                             "mrope_section": [8, 12, 12]}}),
    "qwen2.5-vl-d64": ("qwen2.5-vl", {**D64, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                                 "mrope_section": [8, 12, 12]}}),
    "internvl-d64": ("internvl", D64),
}


@pytest.fixture(scope="module")
def vlm_checkpoint(tmp_path_factory):
    built = {}

    def get(model_id):
        if model_id not in built:
            recipe, over = MODELS[model_id]
            built[model_id] = SAVERS[recipe](str(tmp_path_factory.mktemp(model_id.replace(".", ""))), seed=3, **over)
        return built[model_id]

    return get


def _check(backend, vlm_checkpoint, model_id, mode, dtype=torch.float16):
    model_dir = vlm_checkpoint(model_id)
    with registered(backend):
        llm = LLM(model_dir, device=backend.name, dtype=dtype, num_kv_blocks=48, max_num_seqs=4, max_model_len=256,
                  enforce_eager=(mode == "eager"))
        assert llm.engine.graphs == (mode == "graph")
        hf_lowp, hf_exact = hf_vlm(model_dir).to(dtype), hf_vlm(model_dir).to(dtype).float()
        assert_vlm_close(llm, model_dir, hf_exact, hf_lowp, vlm_prompts("vlm:" + MODELS[model_id][0]), n_tokens=8)
    note(backend, model_id, mode, str(dtype).replace("torch.", ""))


SLOW = pytest.mark.slow


@pytest.mark.parametrize("mode", ["eager", pytest.param("graph", marks=SLOW)])
@pytest.mark.parametrize("model_id", list(MODELS))
def test_ascend_a2(npu_emulation, vlm_checkpoint, model_id, mode):
    _check(make_ascend(npu_emulation, soc="A2"), vlm_checkpoint, model_id, mode)


@SLOW
@pytest.mark.parametrize("model_id", ["qwen2.5-vl-d64", "internvl-d64"])
def test_ascend_300i_duo_graph(npu_emulation, vlm_checkpoint, model_id):
    _check(make_ascend(npu_emulation, soc="310P"), vlm_checkpoint, model_id, "graph")


@pytest.mark.parametrize("mode", ["eager", pytest.param("graph", marks=SLOW)])
def test_camb_internvl(mlu_emulation, vlm_checkpoint, mode):
    _check(make_camb(mlu_emulation), vlm_checkpoint, "internvl-d64", mode)


@SLOW
@pytest.mark.parametrize("model_id", list(MODELS))
def test_maca(maca_emulation, vlm_checkpoint, model_id):
    _check(make_maca(maca_emulation), vlm_checkpoint, model_id, "graph")
