"""Vision-language test cases: ids the support matrix names ("vlm:<recipe>"), each a
recipe of tiny_vlm.SAVERS plus the prompts it is checked with."""
from __future__ import annotations

import os

from .tiny_vlm import SAVERS, random_image

PLACEHOLDER = {"llava": "<image>", "llava-next": "<image>", "internvl": "<IMG_CONTEXT>",
               "internvl-chat": "<IMG_CONTEXT>", "internvl-chat-internlm2": "<IMG_CONTEXT>",
               "qwen2-vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen2.5-vl": "<|vision_start|><|image_pad|><|vision_end|>", "gemma3": "<start_of_image>",
               "qwen3-vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen3-vl-moe": "<|vision_start|><|image_pad|><|vision_end|>"}
VLM_CASES = {f"vlm:{k}": k for k in SAVERS}
# OpenGVLab's remote-code layout, converted from the -hf recipe (testing/convert_vlm.py)
VLM_CASES.update({"vlm:internvl-chat": "internvl-chat", "vlm:internvl-chat-internlm2": "internvl-chat-internlm2"})


def is_vlm_case(case_id: str) -> bool:
    return case_id.startswith("vlm:")


def build_vlm_case(case_id: str, workdir: str) -> tuple[str, str]:
    """(model directory, the transformers reference directory)."""
    recipe = VLM_CASES[case_id]
    if recipe.startswith("internvl-chat"):
        from .convert_vlm import internvl_hf_to_chat

        internlm2 = recipe.endswith("internlm2")
        ref = SAVERS["internvl"](os.path.join(workdir, recipe + "-ref"), seed=3, text="llama" if internlm2 else "qwen2")
        return internvl_hf_to_chat(ref, os.path.join(workdir, recipe), internlm2=internlm2), ref
    path = SAVERS[recipe](os.path.join(workdir, recipe.replace(".", "")), seed=3)
    return path, path


def vlm_prompts(case_id: str) -> list[tuple[str, list]]:
    """Two images in one prompt and one image of another shape, plus a text-only prompt."""
    ph = PLACEHOLDER[VLM_CASES[case_id]]
    return [(f"Hello {ph} and {ph} what is it?", [random_image(1, 48, 32), random_image(2, 32, 56)]),
            (f"{ph} Tell me a story.", [random_image(3, 40, 40)]),
            ("The quick brown fox jumps over the lazy dog.", [])]
