"""Comparing halinfer with transformers on vision-language checkpoints (float32, CPU).

The reference inputs come from transformers: ``AutoProcessor`` where it loads; where it
cannot (Qwen2-VL's processor insists on a video processor, which needs torchvision), the
family's image processor plus the placeholder expansion its processor documents (each
image pad repeated grid_t * grid_h * grid_w / merge^2 times), written here independently.
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass

import torch

from .hf_compare import max_rel_err

QWEN_PAD = "<|image_pad|>"


def hf_processor_inputs(model_dir: str, text: str, images: list) -> dict:
    """input_ids [1, P] and the pixel tensors transformers' processor gives for (text, images)."""
    import transformers

    try:
        proc = transformers.AutoProcessor.from_pretrained(model_dir)
    except Exception:   # noqa: BLE001 - no torchvision: the image-processor path below
        proc = None
    if proc is not None and images:
        out = proc(text=text, images=images, return_tensors="pt")
        return {k: v for k, v in out.items() if k != "attention_mask"}
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    if not images:
        return {"input_ids": tok(text, return_tensors="pt")["input_ids"]}
    from ..engine.multimodal import load_image_processor

    ip = load_image_processor(model_dir)
    if "<IMG_CONTEXT>" in text:   # InternVL: tiles on (InternVLProcessor's default), <img> ctx*n </img>
        with open(os.path.join(model_dir, "processor_config.json")) as f:
            per_tile = json.load(f)["image_seq_length"]
        pix = ip(images=images, crop_to_patches=True, return_tensors="pt")
        counts = pix["num_patches"].tolist()
        parts = text.split("<IMG_CONTEXT>")
        text = parts[0] + "".join("<img>" + "<IMG_CONTEXT>" * (per_tile * n) + "</img>" + rest
                                  for n, rest in zip(counts, parts[1:]))
        return {"input_ids": tok(text, return_tensors="pt")["input_ids"], "pixel_values": pix["pixel_values"]}
    pix = ip(images=images, return_tensors="pt")
    merge = getattr(ip, "merge_size", 2)
    counts = [int(g.prod()) // merge ** 2 for g in pix["image_grid_thw"]]
    parts = text.split(QWEN_PAD)
    assert len(parts) == len(counts) + 1, "one image pad per image"
    text = parts[0] + "".join(QWEN_PAD * n + rest for n, rest in zip(counts, parts[1:]))
    return {"input_ids": tok(text, return_tensors="pt")["input_ids"], **dict(pix)}


def hf_vlm(model_dir: str):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32,
                                                       attn_implementation="eager").eval()


def _with_token_types(model, inputs: dict) -> dict:
    """transformers >= 5.2x wants mm_token_type_ids for M-RoPE (image tokens 1); older ones lack it."""
    inputs = dict(inputs)
    img = getattr(model.config, "image_token_id", None) or getattr(model.config, "image_token_index", None)
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters and "mm_token_type_ids" not in inputs:
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == img).int()
    return inputs


@dataclass
class VLMRun:
    prompt_logits: torch.Tensor
    tokens: list[int]
    step_logits: list[torch.Tensor]


@torch.inference_mode()
def hf_vlm_greedy(model, inputs: dict, n: int) -> VLMRun:
    inputs = _with_token_types(model, inputs)
    prompt_logits = model(**inputs).logits[0].float()
    ids = inputs["input_ids"]
    out = model.generate(**inputs, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=[], pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    return VLMRun(prompt_logits, out.sequences[0, ids.shape[1]:].tolist(), [lg[0].float() for lg in out.logits])


def halinfer_vlm_greedy(llm, prompts: list[dict], n: int):
    """(per prompt: tokens, per-step logits, prompt token ids) from one batched generate()."""
    from ..core.sampling import SamplingParams
    from .logit_log import record_logits

    with record_logits(llm) as per_req:
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
    return [(o.outputs[0].token_ids, per_req[o.request_id], o.prompt_token_ids) for o in outs]


def halinfer_prompt_logits(llm, prompt: dict) -> torch.Tensor:
    _, req = llm.engine.inputs.request("__logits__", prompt, None)
    return llm.engine.core.prompt_logits(req.prompt_token_ids, req.mm_inputs)


def assert_vlm_matches(llm, model_dir: str, hf, prompts: list[tuple[str, list]], n_tokens: int = 16,
                       tol: float = 1e-4) -> None:
    """Prompt logits, every decode step's logits (all prompts batched) and greedy tokens."""
    refs, reqs = [], []
    for text, images in prompts:
        inputs = hf_processor_inputs(model_dir, text, images)
        refs.append((inputs["input_ids"][0].tolist(), hf_vlm_greedy(hf, inputs, n_tokens)))
        reqs.append({"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text})
    for req, (ids, ref) in zip(reqs, refs):
        err = max_rel_err(halinfer_prompt_logits(llm, req), ref.prompt_logits)
        assert err < tol, f"prompt logits differ (relative error {err:.2e}) for {req['prompt']!r}"
    got = halinfer_vlm_greedy(llm, reqs, n_tokens)
    for req, (ids, ref), (tokens, steps, prompt_ids) in zip(reqs, refs, got):
        assert prompt_ids == ids, f"expanded prompt differs from transformers' for {req['prompt']!r}"
        for i, (mine, theirs) in enumerate(zip(steps, ref.step_logits)):
            err = max_rel_err(mine, theirs)
            assert err < tol, f"decode step {i} logits differ (relative error {err:.2e}) for {req['prompt']!r}"
        assert tokens == ref.tokens, f"greedy tokens differ for {req['prompt']!r}"


@torch.inference_mode()
def assert_vlm_close(llm, model_dir: str, hf_exact, hf_lowp, prompts: list[tuple[str, list]], n_tokens: int = 12,
                     slack: float = 3.0) -> None:
    """The low-precision equivalence (as hf_compare.assert_close_to_transformers, with images):
    halinfer's mean logit error against transformers computing exactly (float32, weights
    rounded to the run's dtype), over every prompt position and decode step, at most ``slack``
    times transformers' own error in the run's dtype (plus 1e-3); greedy tokens equal to the
    exact ones until a step whose two picks lie within that noise."""
    from .hf_compare import mean_rel_err

    mine_all, theirs_all = [], []
    for text, images in prompts:
        inputs = hf_processor_inputs(model_dir, text, images)
        req = {"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text}
        ref = hf_vlm_greedy(hf_exact, _cast(inputs, torch.float32), n_tokens)
        full = dict(inputs, input_ids=torch.cat((inputs["input_ids"], torch.tensor([ref.tokens])), dim=1))
        exact = hf_exact(**_with_token_types(hf_exact, _cast(full, torch.float32))).logits[0].float()
        lowp = hf_lowp(**_with_token_types(hf_lowp, _cast(full, hf_lowp.dtype))).logits[0].float()
        noise_max = max(max_rel_err(lowp[j], exact[j]) for j in range(exact.shape[0]))
        P = inputs["input_ids"].shape[1]
        prompt = halinfer_prompt_logits(llm, req).cpu()
        mine = [mean_rel_err(prompt[j], exact[j]) for j in range(P)]
        ((tokens, steps, _),) = halinfer_vlm_greedy(llm, [req], n_tokens)
        for i, (m, r) in enumerate(zip(steps, ref.step_logits)):
            mine.append(mean_rel_err(m.cpu(), exact[P - 1 + i]))
            if tokens[i] != ref.tokens[i]:
                gap = (r[ref.tokens[i]] - r[tokens[i]]).item()
                assert gap <= slack * noise_max * r.abs().max().item(), (
                    f"step {i}: halinfer chose {tokens[i]}, the exact reference {ref.tokens[i]} (margin {gap:.3g})")
                break
        mine_all += mine
        theirs_all += [mean_rel_err(lowp[j], exact[j]) for j in range(len(mine))]
    m, t = sum(mine_all) / len(mine_all), sum(theirs_all) / len(theirs_all)
    assert m <= slack * t + 1e-3, f"mean logit error {m:.2e} > {slack} x transformers' own {t:.2e}"


def _cast(inputs: dict, dtype) -> dict:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
