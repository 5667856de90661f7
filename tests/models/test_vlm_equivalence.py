"""Vision-language families against transformers, float32 on the CPU: the processor's
outputs, prompt and decode logits, and greedy tokens, through generate(), chat(), the
prefix cache and chunked prefill.  Checkpoints: halinfer/testing/tiny_vlm.py."""
from __future__ import annotations

import base64
import io

import pytest
import torch

from halinfer import LLM, SamplingParams
from halinfer.testing.hf_vlm import assert_vlm_matches, halinfer_vlm_greedy, hf_processor_inputs, hf_vlm, \
    hf_vlm_greedy
from halinfer.testing.tiny_vlm import SAVERS, random_image

PLACEHOLDER = {"llava": "<image>", "llava-next": "<image>", "qwen2-vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen2.5-vl": "<|vision_start|><|image_pad|><|vision_end|>", "internvl": "<IMG_CONTEXT>",
               "gemma3": "<start_of_image>", "qwen3-vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen3-vl-moe": "<|vision_start|><|image_pad|><|vision_end|>"}
FAMILIES = list(SAVERS)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    built = {}

    def get(fam):
        if fam not in built:
            built[fam] = SAVERS[fam](str(tmp_path_factory.mktemp(fam.replace(".", ""))), seed=3)
        return built[fam]

    return get


def make_llm(path, **kw):
    kw = {"device": "cpu", "dtype": "float32", "num_kv_blocks": 96, "block_size": 8, **kw}
    return LLM(path, **kw)


def prompt(fam, n_images=1, lead="Hello there ", tail=" what is the capital of France?"):
    ph = PLACEHOLDER[fam]
    return lead + " and ".join([ph] * n_images) + tail


@pytest.mark.parametrize("fam", FAMILIES)
def test_processor_outputs_match_transformers(fam, vlm_dir):
    path = vlm_dir(fam)
    llm = make_llm(path)
    img = random_image(5, 48, 40)
    ref = hf_processor_inputs(path, prompt(fam), [img])
    _, req = llm.engine.inputs.request("r", {"prompt": prompt(fam), "multi_modal_data": {"image": img}}, None)
    assert req.prompt_token_ids == ref["input_ids"][0].tolist()
    (mm,) = req.mm_inputs
    assert torch.equal(mm.data["pixel_values"].reshape(ref["pixel_values"].shape), ref["pixel_values"])
    assert req.prompt_token_ids[mm.offset:mm.end] == [req.prompt_token_ids[mm.offset]] * mm.length


@pytest.mark.parametrize("fam", FAMILIES)
def test_greedy_matches_transformers_for_several_image_sizes(fam, vlm_dir):
    path = vlm_dir(fam)
    llm = make_llm(path)
    sizes = [(32, 32), (40, 56), (64, 48), (20, 36)]
    cases = [(prompt(fam), [random_image(i, w, h)]) for i, (w, h) in enumerate(sizes)]
    assert_vlm_matches(llm, path, hf_vlm(path), cases)


@pytest.mark.parametrize("fam", FAMILIES)
def test_two_images_in_one_prompt_and_a_text_only_request_in_the_same_batch(fam, vlm_dir):
    path = vlm_dir(fam)
    llm = make_llm(path)
    cases = [(prompt(fam, 2), [random_image(7, 48, 32), random_image(8, 32, 64)]),
             ("Tell me a story about a robot who learns to paint.", [])]
    assert_vlm_matches(llm, path, hf_vlm(path), cases)


@pytest.mark.parametrize("fam", ["llava", "qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe"])   # gemma3: test_gemma3_chunks_never_end_inside_an_image
def test_chunked_prefill_through_image_tokens_runs_the_encoder_once_per_image(fam, vlm_dir):
    path = vlm_dir(fam)
    # 5-token chunks: every image's tokens are split across several steps
    llm = make_llm(path, max_num_batched_tokens=5, max_num_seqs=4)
    imgs = [random_image(11, 56, 40), random_image(12, 40, 40)]
    cases = [(prompt(fam, 2), imgs)]
    assert_vlm_matches(llm, path, hf_vlm(path), cases)
    cache = llm.engine.runner.encoder_cache
    # prompt_logits (2 images) + generate (2 images): each image encoded once per request
    assert cache.encoder_runs == 4
    assert len(cache) == 0, "features of finished requests must be freed"


@pytest.mark.parametrize("fam", ["llava", "qwen2-vl", "gemma3", "qwen3-vl", "qwen3-vl-moe"])
def test_prefix_cache_shares_blocks_only_for_the_same_image(fam, vlm_dir):
    path = vlm_dir(fam)
    a, b = random_image(21, 40, 40), random_image(22, 40, 40)
    text = prompt(fam, lead="", tail=" Tell me a story about a robot who learns to paint.")
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    outs = {}
    for caching in (True, False):
        llm = make_llm(path, enable_prefix_caching=caching)
        bm = llm.engine.block_manager
        runs = []
        for img in (a, a, b):
            before = bm.hits
            o = llm.generate([{"prompt": text, "multi_modal_data": {"image": img}}], sp, use_tqdm=False)[0]
            runs.append((o.outputs[0].token_ids, bm.hits - before))
        outs[caching] = runs
    (ta1, h1), (ta2, h2), (tb, h3) = outs[True]
    assert h1 == 0 and h2 > 0, "the same image must reuse the cached blocks"
    assert h3 == 0, "a different image must not reuse blocks holding the first image's tokens"
    assert [t for t, _ in outs[True]] == [t for t, _ in outs[False]]
    assert ta1 == ta2 and ta1 != tb


def test_qwen3_vl_moe_expert_layouts_load_alike(vlm_dir, tmp_path):
    """The experts as transformers 5 save_pretrained writes them ([E, 2I, H] / [E, H, I])
    and as per-expert matrices (experts.<e>.gate_proj.weight ...) match transformers on the
    published transposed layout the family's other tests load ([E, H, 2I] / [E, I, H]);
    a fused tensor of neither shape is refused by name."""
    from safetensors.torch import load_file, save_file

    from halinfer.testing.tiny_vlm import save_qwen3_vl_moe

    published = vlm_dir("qwen3-vl-moe")
    native = save_qwen3_vl_moe(str(tmp_path / "native"), seed=3, expert_layout="save_pretrained")
    per_expert = str(tmp_path / "per-expert")
    save_qwen3_vl_moe(per_expert, seed=3, expert_layout="save_pretrained")
    sd, out = load_file(f"{per_expert}/model.safetensors"), {}
    for k, v in sd.items():
        if k.endswith(".experts.gate_up_proj"):
            for e, w in enumerate(v):
                gate, up = w.chunk(2)
                out[f"{k[:-len('gate_up_proj')]}{e}.gate_proj.weight"] = gate.contiguous()
                out[f"{k[:-len('gate_up_proj')]}{e}.up_proj.weight"] = up.contiguous()
        elif k.endswith(".experts.down_proj"):
            out.update({f"{k[:-len('down_proj')]}{e}.down_proj.weight": w.contiguous() for e, w in enumerate(v)})
        else:
            out[k] = v
    save_file(out, f"{per_expert}/model.safetensors", metadata={"format": "pt"})
    cases = [(prompt("qwen3-vl-moe", 2), [random_image(61, 48, 32), random_image(62, 32, 40)])]
    hf = hf_vlm(published)
    for path in (native, per_expert):
        assert_vlm_matches(make_llm(path), published, hf, cases)
    sd = load_file(f"{native}/model.safetensors")
    key = next(k for k in sd if k.endswith(".experts.down_proj"))
    sd[key] = sd[key][:, :-1].contiguous()
    save_file(sd, f"{native}/model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"experts\.down_proj.*expected \[E, 96, 32\]"):
        make_llm(native)


def _data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("fam", ["llava", "qwen2-vl", "gemma3"])
def test_chat_with_data_url_file_path_and_pil_image_parts(fam, vlm_dir, tmp_path):
    path = vlm_dir(fam)
    llm = make_llm(path)
    img = random_image(31, 40, 48)
    file = tmp_path / "img.png"
    img.save(file)
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    outs = []
    for part in ({"type": "image_url", "image_url": {"url": _data_url(img)}},
                 {"type": "image_url", "image_url": {"url": f"file://{file}"}},
                 {"type": "image_url", "image_url": str(file)},
                 {"type": "image", "image": img}):
        msgs = [{"role": "user", "content": [{"type": "text", "text": "What is in "}, part,
                                              {"type": "text", "text": "?"}]}]
        outs.append(llm.chat(msgs, sp)[0].outputs[0].token_ids)
    assert all(o == outs[0] for o in outs)
    # the same conversation written as a prompt with the placeholder, through transformers
    text = llm.apply_chat_template([{"role": "user", "content": "What is in " + PLACEHOLDER[fam] + "?"}])
    ref = hf_vlm_greedy(hf_vlm(path), hf_processor_inputs(path, text, [img]), 8)
    assert outs[0] == ref.tokens


@pytest.mark.parametrize("budget", [16, 17, 21, 29, 40])
def test_gemma3_chunks_never_end_inside_an_image(budget, vlm_dir, monkeypatch):
    """Gemma 3's image tokens attend both ways, so a chunk must hold a whole image: for
    budgets that would cut images at different points, every chunk boundary falls outside
    the images (checked on each planned step) and the results equal transformers'."""
    from halinfer.core import scheduler as sched

    path = vlm_dir("gemma3")
    llm = make_llm(path, max_num_batched_tokens=budget, max_num_seqs=4)
    cuts = []
    planned = sched.Scheduler._planned

    def spy(self, batch):
        for s, n in zip(batch.seqs, batch.num_new):
            cuts.append((s.num_computed + n, s.num_tokens, [(m.offset, m.end) for m in s.mm_inputs]))
        return planned(self, batch)

    monkeypatch.setattr(sched.Scheduler, "_planned", spy)
    cases = [(prompt("gemma3", 2), [random_image(51, 56, 40), random_image(52, 40, 24)]),
             ("A robot learns to paint.", []), (prompt("gemma3", lead="x"), [random_image(53, 33, 47)])]
    assert_vlm_matches(llm, path, hf_vlm(path), cases, n_tokens=6)
    assert any(end < total for end, total, _ in cuts), "the budget must split prompts"
    for end, total, images in cuts:
        assert not any(a < end < b for a, b in images), f"a chunk ended at {end}, inside an image {images}"


def test_gemma3_image_longer_than_the_step_budget_is_refused_clearly(vlm_dir):
    path = vlm_dir("gemma3")
    llm = make_llm(path, max_num_batched_tokens=15)   # an image is 16 tokens
    good = {"prompt": "A robot learns to paint."}
    with pytest.raises(ValueError, match="prompt 1: .*both ways.*max_num_batched_tokens is 15"):
        llm.generate([good, {"prompt": prompt("gemma3"), "multi_modal_data": {"image": random_image(1, 32, 32)}}],
                     SamplingParams(max_tokens=2), use_tqdm=False)
    assert llm.generate([good], SamplingParams(max_tokens=2), use_tqdm=False)[0].outputs[0].token_ids


def test_bad_images_get_clear_errors_and_leave_the_engine_working(vlm_dir):
    path = vlm_dir("llava")
    llm = make_llm(path)
    sp = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    good = {"prompt": prompt("llava"), "multi_modal_data": {"image": random_image(1, 32, 32)}}
    bad = [
        ({"prompt": prompt("llava"), "multi_modal_data": {"image": b"not an image"}}, ValueError, "not a readable image"),
        ({"prompt": prompt("llava"), "multi_modal_data": {"image": 42}}, TypeError, "must be a PIL.Image"),
        ({"prompt": prompt("llava"), "multi_modal_data": {"image": [random_image(1, 32, 32)] * 2}}, ValueError,
         "1 image placeholder"),
        ({"prompt": prompt("llava", 17), "multi_modal_data": {"image": [random_image(1, 32, 32)] * 17}}, ValueError,
         "at most 16"),
        ({"prompt": prompt("llava"), "multi_modal_data": {"video": []}}, ValueError, "accepted: 'image'"),
        ({"prompt": prompt("llava"), "multi_modal_data": {"image": "https://example.com/a.png"}}, ValueError,
         "allowed-media-domains"),
    ]
    for item, exc, msg in bad:
        with pytest.raises(exc, match=msg) as e:
            llm.generate([good, item], sp, use_tqdm=False)
        assert "prompt 1" in str(e.value)
        assert not llm.engine.outputs.requests and not llm.engine.core.seqs
    with pytest.raises(ValueError, match="conversation 0: message 0, part 0: .*not a readable image"):
        llm.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert llm.generate([good], sp, use_tqdm=False)[0].outputs[0].finish_reason == "length"


def test_text_only_model_refuses_images(case_dirs):
    model_dir, _ = case_dirs("llama")
    llm = LLM(model_dir, device="cpu", dtype="float32", num_kv_blocks=64, block_size=8)
    with pytest.raises(ValueError, match="takes no images"):
        llm.generate([{"prompt": "hi", "multi_modal_data": {"image": random_image(0, 8, 8)}}], use_tqdm=False)


@pytest.mark.parametrize("internlm2", [False, True], ids=["qwen2-text", "internlm2-text"])
def test_internvl_remote_code_layout_matches_transformers(internlm2, tmp_path):
    """OpenGVLab's InternVLChatModel layout, converted from a transformers -hf checkpoint
    (testing/convert_vlm.py says why the two compute the same), against transformers on the
    -hf original: tiled images through the remote code's own image settings."""
    from halinfer.testing.convert_vlm import internvl_hf_to_chat
    from halinfer.testing.tiny_vlm import save_internvl

    src = save_internvl(str(tmp_path / "hf"), seed=5, text="llama" if internlm2 else "qwen2")
    dst = internvl_hf_to_chat(src, str(tmp_path / "chat"), internlm2=internlm2)
    llm = make_llm(dst)
    hf = hf_vlm(src)
    cases = [(prompt("internvl", 2), [random_image(41, 56, 40), random_image(42, 32, 32)]),
             (prompt("internvl"), [random_image(43, 24, 64)])]
    # the prompts, expanded by halinfer from the converted directory, must equal transformers'
    # processor output on the original; then logits and tokens as for every family
    refs = [(hf_processor_inputs(src, t, i), t, i) for t, i in cases]
    for inputs, text, images in refs:
        _, req = llm.engine.inputs.request("r", {"prompt": text, "multi_modal_data": {"image": images}}, None)
        assert req.prompt_token_ids == inputs["input_ids"][0].tolist()
        assert torch.equal(torch.cat([m.data["pixel_values"] for m in req.mm_inputs]), inputs["pixel_values"])
    got = halinfer_vlm_greedy(llm, [{"prompt": t, "multi_modal_data": {"image": i}} for t, i in cases], 12)
    for (inputs, _, _), (tokens, _, _) in zip(refs, got):
        assert tokens == hf_vlm_greedy(hf, inputs, 12).tokens


def test_images_cross_the_multi_process_executor(vlm_dir):
    """MMInputs pickle into the worker process: the same tokens as in-process."""
    path = vlm_dir("qwen2-vl")
    item = {"prompt": prompt("qwen2-vl", 2), "multi_modal_data": {"image": [random_image(51, 40, 40),
                                                                             random_image(52, 56, 32)]}}
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    want = make_llm(path).generate([item], sp, use_tqdm=False)[0].outputs[0].token_ids
    llm = make_llm(path, executor="mp")
    try:
        assert llm.generate([item], sp, use_tqdm=False)[0].outputs[0].token_ids == want
    finally:
        llm.shutdown()
