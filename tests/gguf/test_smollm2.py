"""SmolLM2-135M-Instruct (Q4_1 GGUF) through halinfer against transformers loading the same file."""
from __future__ import annotations

from halinfer import LLM, SamplingParams
from halinfer.testing.hf_gguf import hf_greedy_tokens

QUESTIONS = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about autumn.",
             "How many legs does a spider have?", "Translate 'good morning' into Spanish.",
             "What is 12 times 7?", "Give me a tip for learning to code.", "Who wrote Romeo and Juliet?"]
MIXED = ("Café №42 costs 3.14159€ —   naïve  façade\t\ttabs\n\n\nnew lines 日本語 🙂 0123456789 "
         "x=y+1;  end  ")


def _chat_ids(tok, q):
    return tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                   return_dict=False)


def test_greedy_32_tokens_equal_transformers_float32(smol32, hf_smol):
    prompts = [smol32.engine.encode(smol32.apply_chat_template([{"role": "user", "content": q}]))
               for q in QUESTIONS]
    outs = smol32.generate(prompt_token_ids=prompts, sampling_params=SamplingParams(
        temperature=0, max_tokens=32, ignore_eos=True), use_tqdm=False)
    for q, p, o in zip(QUESTIONS, prompts, outs):
        assert o.outputs[0].token_ids == hf_greedy_tokens(hf_smol, p, 32), q


def test_chat_capital_of_france_says_paris(smol32):
    out = smol32.chat([{"role": "user", "content": "What is the capital of France?"}],
                      SamplingParams(temperature=0, max_tokens=32))
    assert "Paris" in out[0].outputs[0].text


def test_tokenizer_round_trip_equals_transformers(smol32, hf_smol_tokenizer):
    ours, ref = smol32.tokenizer, hf_smol_tokenizer
    ids = ours(MIXED).input_ids
    assert ids == ref(MIXED).input_ids
    assert ours.decode(ids) == ref.decode(ids) == MIXED
    conv = [{"role": "user", "content": MIXED}]
    assert ours.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == \
        ref.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    special = "<|im_start|>user\nhi<|im_end|>"
    assert ours(special).input_ids == ref(special).input_ids
    assert ours.eos_token == ref.eos_token and ours.bos_token == ref.bos_token


def test_bfloat16_batched_equals_alone(smol_path):
    """bf16 GEMMs of a batch round differently from one sequence's, so the two may part at a
    near-tie; until then the tokens are equal and the logits close, and where they part the
    two picks are within bf16 noise of each other (a batching bug gives far larger gaps)."""
    from halinfer.testing.hf_compare import halinfer_greedy, max_rel_err

    llm = LLM(smol_path, device="cpu", dtype="bfloat16", max_model_len=512, num_kv_blocks=256, block_size=16)
    prompts = [llm.engine.encode(llm.apply_chat_template([{"role": "user", "content": q}])) for q in QUESTIONS[:4]]
    batched = halinfer_greedy(llm, prompts, 16)
    for p, (tokens, logits) in zip(prompts, batched):
        (alone_tokens, alone_logits), = halinfer_greedy(llm, [p], 16)
        assert tokens[:4] == alone_tokens[:4]
        for i, (a, b) in enumerate(zip(tokens, alone_tokens)):
            assert max_rel_err(logits[i].float(), alone_logits[i].float()) < 0.05, f"step {i} logits differ"
            if a != b:
                ref = alone_logits[i].float()
                gap = (ref[b] - ref[a]).item()
                assert gap <= 0.02 * ref.abs().max().item(), f"step {i}: batched picked {a}, alone {b}, gap {gap}"
                break
        assert len(set(tokens)) > 3  # real text, not one token repeated


def test_directory_holding_the_gguf_loads_the_same_config(smol_path, smol32, tmp_path):
    import os

    from halinfer.core.loader import open_checkpoint

    os.symlink(smol_path, tmp_path / os.path.basename(smol_path))
    ck = open_checkpoint(str(tmp_path))  # (the file form is what smol32 loaded)
    assert ck.config._data == smol32.engine.model_config._data
    assert ck.config.architecture == "LlamaForCausalLM" and ck.config.tie_word_embeddings
