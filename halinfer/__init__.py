"""halinfer: LLM inference on any accelerator.

    from halinfer import LLM, SamplingParams
    llm = LLM("path/to/hf-model", device="auto")
    print(llm.generate(["Hello"], SamplingParams(max_tokens=32))[0].outputs[0].text)
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LLM", "AsyncLLM", "SamplingParams", "pipeline", "list_devices", "__version__"]


def list_devices() -> list[dict]:
    """Every plugin found, available or not and why."""
    from .core.device import list_devices as _ld

    return _ld()


def __getattr__(name):
    # Lazy: `import halinfer` stays cheap (no transformers import) for the CLI and plugins.
    if name == "LLM":
        from .llm import LLM

        return LLM
    if name == "AsyncLLM":
        from .engine.async_llm import AsyncLLM

        return AsyncLLM
    if name == "SamplingParams":
        from .core.sampling import SamplingParams

        return SamplingParams
    if name == "pipeline":
        from .pipeline import pipeline

        return pipeline
    raise AttributeError(f"module 'halinfer' has no attribute {name!r}")
