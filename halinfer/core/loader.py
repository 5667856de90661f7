"""Reading a Hugging Face model directory: weights, tokenizer, generation config."""
from __future__ import annotations

import functools
import glob
import json
import os
from typing import Iterator

import torch

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def check_model_dir(model_dir: str) -> None:
    if not os.path.exists(model_dir):
        raise FileNotFoundError(f"model {model_dir!r} does not exist as a local path and is not a Hugging Face "
                                "hub id (accepted: a directory with config.json + *.safetensors, a .gguf file, a "
                                "directory holding one .gguf, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct)")
    if not os.path.isdir(model_dir):
        raise NotADirectoryError(f"{model_dir!r} is a file; pass the model's directory")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"model directory {model_dir!r} has no config.json")


def weight_files(model_dir: str) -> list[str]:
    """The checkpoint files, honouring a sharded index when there is one."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(model_dir, index_name)
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(model_dir, s))]
            if missing:
                raise FileNotFoundError(f"{index_name} in {model_dir!r} names missing shard(s): {', '.join(missing)}")
            return [os.path.join(model_dir, s) for s in shards]
    for pat in WEIGHT_PATTERNS:
        files = sorted(glob.glob(os.path.join(model_dir, pat)))
        if files:
            return files
    raise FileNotFoundError(f"model directory {model_dir!r} has no weights (*.safetensors or pytorch_model*.bin)")


def iter_weights(model_dir: str, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, CPU tensor) for every tensor of the checkpoint, with a progress bar."""
    files = weight_files(model_dir)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="Loading weights", unit="file", leave=False)
    try:
        for path in files:
            yield from _read_file(path)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _read_file(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """One weight file's tensors; a damaged file is a ValueError naming it."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        else:
            yield from torch.load(path, map_location="cpu", weights_only=True).items()
    except Exception as e:  # noqa: BLE001 - safetensors/pickle errors of every kind: name the file
        raise ValueError(f"weight file {path!r} could not be read (truncated or damaged?): "
                         f"{type(e).__name__}: {e}") from None


def load_tokenizer(model_dir: str):
    """The model's tokenizer, or None when the directory has no tokenizer files."""
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
    if not any(os.path.isfile(os.path.join(model_dir, n)) for n in names):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as first:  # remote-code tokenizers: fall back to the fast tokenizer file
        path = os.path.join(model_dir, "tokenizer.json")
        if os.path.isfile(path):
            from transformers import PreTrainedTokenizerFast

            try:
                return PreTrainedTokenizerFast(tokenizer_file=path)
            except Exception as e:  # noqa: BLE001 - a damaged file: say which
                raise ValueError(f"tokenizer file {path!r} could not be read: {type(e).__name__}: {e}") from None
        raise ValueError(f"could not load the tokenizer of {model_dir!r}: {first}") from first


def eos_token_ids(model_dir: str, cfg, tokenizer) -> set[int]:
    ids: set[int] = set()

    def add(v):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)

    gen = os.path.join(model_dir, "generation_config.json")
    if os.path.isfile(gen):
        with open(gen) as f:
            add(json.load(f).get("eos_token_id"))
    add(cfg.get("eos_token_id"))
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        add(tokenizer.eos_token_id)
    return ids


def init_dummy_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights for benchmarks with no checkpoint (--load-format dummy).

    Small normal values keep activations finite through many layers; norms keep 1.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        if not p.dtype.is_floating_point or name.endswith("norm.weight") or "layernorm" in name:
            continue
        cpu = torch.empty(p.shape, dtype=torch.float32).normal_(0, 0.02, generator=g) if p.numel() < (1 << 24) \
            else None
        if cpu is not None:
            p.data.copy_(cpu)
        else:  # large tensors: generate on the device, seeded per tensor
            dg = torch.Generator(device=p.device).manual_seed(seed + hash(name) % (1 << 30))
            # float8 has no normal_: draw in bf16 and cast (integer quantized tensors keep any bits)
            dst = p.data if p.element_size() > 1 else torch.empty(p.shape, dtype=torch.bfloat16, device=p.device)
            dst.normal_(0, 0.02, generator=dg)
            if dst is not p.data:
                p.data.copy_(dst)
    # a layout's structure that random values break (block FP8's scales repeat over each
    # block's rows): a quantized layer's method restores it, so benchmarks take real paths
    for m in model.modules():
        hook = getattr(getattr(m, "qm", None), "after_dummy_init", None)
        if hook is not None:
            hook(m)


def finish_loading(model: torch.nn.Module) -> None:
    """Once a model's weights are final (loaded from a checkpoint, or random from
    init_dummy_weights and its after_dummy_init fixes), each quantized layer's method may
    re-lay its tensors once for the backend's kernels (GPTQ: Ops.prepare_gptq), replacing
    them.  Runs on both paths, so benchmarks on random weights take the prepared kernels too."""
    with torch.no_grad():
        for m in model.modules():
            hook = getattr(getattr(m, "qm", None), "after_loading", None)
            if hook is not None:
                hook(m)


def lmdeploy_smooth_quant_names(weights: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """LMDeploy's ``lite smooth_quant`` saves each QLinear's per-output-channel float32 scale as
    ``<linear>.scale`` [N, 1] beside its int8 ``weight`` (``pytorch/models/q_modules.py``), where
    compressed-tensors says ``weight_scale``: one name for the W8A8 layers to load."""
    for name, t in weights:
        if name.endswith(".scale"):
            name = name[:-len("scale")] + "weight_scale"
        yield name, t


class Checkpoint:
    """A model as stored: its config, weights, tokenizer and stop ids, whatever the format.

    ``open_checkpoint`` picks the format; the engine and the workers read a model only
    through this, so a new format (GGUF, a hub id) is a new way to build one.
    """

    def __init__(self, path: str):
        check_model_dir(path)
        self.path = path
        from .config import ModelConfig

        self.config = ModelConfig.from_dir(path)

    def weights(self, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        weights = iter_weights(self.path, progress)
        qc = self.config.get("quantization_config") or {}
        if str(qc.get("quant_method", "")).lower() == "smooth_quant":
            return lmdeploy_smooth_quant_names(weights)
        return weights

    def tokenizer(self):
        return load_tokenizer(self.path)

    def eos_token_ids(self, tokenizer) -> set[int]:
        return eos_token_ids(self.path, self.config, tokenizer)


def open_checkpoint(model: str) -> Checkpoint:
    """The checkpoint ``model`` names: a Hugging Face directory, a .gguf file, a
    directory holding exactly one .gguf file, or a Hugging Face hub id."""
    model = os.fspath(model)
    if os.path.isfile(model):
        if model.endswith(".gguf"):
            return _gguf(os.path.realpath(model), os.path.getmtime(model))
        raise ValueError(f"{model!r} is a file but not a .gguf; pass a .gguf file, a model directory "
                         "(config.json + *.safetensors) or a Hugging Face hub id")
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
        ggufs = sorted(glob.glob(os.path.join(model, "*.gguf")))
        if len(ggufs) == 1:
            return _gguf(os.path.realpath(ggufs[0]), os.path.getmtime(ggufs[0]))
        if ggufs:
            raise ValueError(f"{model!r} holds {len(ggufs)} .gguf files ({', '.join(map(os.path.basename, ggufs))}); "
                             "pass the one to load")
    if not os.path.exists(model):
        from .hub import looks_like_hub_id, resolve

        if looks_like_hub_id(model):
            return open_checkpoint(resolve(model))
    return Checkpoint(model)


@functools.lru_cache(maxsize=2)
def _gguf(path: str, mtime: float) -> Checkpoint:
    """GGUF files are parsed once per process: the engine reads the config and the
    in-process worker the weights (parsing a 100k-token vocabulary takes seconds)."""
    from .gguf import GGUFCheckpoint

    return GGUFCheckpoint(path)
