"""Running the shared Triton kernels (halinfer/kernels/triton) on CPU tensors, through Triton's interpreter.

Triton fixes its mode when it is imported: with ``TRITON_INTERPRET=1`` every
``@triton.jit`` function (Triton's own library functions included) becomes an
interpreted one that runs on CPU tensors with numpy; without it they compile for
a GPU.  One process therefore runs either interpreted or compiled Triton, never
both (an interpreted kernel cannot call a compiled ``tl.zeros``, and interpreted
device-function calls leave ``triton.language`` patched).

``ensure_interpreter()`` puts this process in interpreter mode.  It is meant for
test sessions and the conformance provider on machines without a CUDA device:

* triton not imported yet: set ``TRITON_INTERPRET=1``; done.
* triton already imported compiled (transformers imports it through
  torch._dynamo), and no CUDA device: nothing compiled can run here anyway, so
  the pure-Python triton modules are re-imported in interpreter mode (the C
  extension stays loaded).  Modules that imported triton earlier keep the old
  objects, which keep working as before.
* a CUDA device is present: never flipped behind a GPU user's back; only when
  ``HALINFER_TRITON_INTERPRET=1`` asks for it before triton is imported.

The variable stays set for the rest of the process (the interpreter reads it at
run time too); on a machine with no CUDA device that changes nothing anyone
else could observe, since compiled Triton cannot run there.
"""
from __future__ import annotations

import os
import sys

FORCE_ENV = "HALINFER_TRITON_INTERPRET"


def interpreting() -> bool:
    """Whether the imported triton (or the one about to be imported) runs interpreted."""
    mod = sys.modules.get("triton")
    knobs = getattr(mod, "knobs", None) if mod is not None else None
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cuda_visible() -> bool:
    import torch

    return bool(torch.version.cuda) and torch.cuda.is_available()


def interpreter_wanted() -> bool:
    """Interpreter mode is the right default for this process: no CUDA device, or asked for."""
    return os.environ.get(FORCE_ENV, "0") == "1" or not cuda_visible()


def _reimport_triton() -> None:
    for name in list(sys.modules):
        if name == "triton" or name.startswith("triton."):
            if not name.startswith("triton._C"):
                del sys.modules[name]
        # Our kernels were decorated by the old triton: decorate them again.
        elif name.startswith("halinfer.kernels.triton") and name != __name__:
            del sys.modules[name]
    import triton  # noqa: F401


def ensure_interpreter() -> tuple[bool, str]:
    """Put this process's Triton in interpreter mode if wanted and possible: (ok, reason)."""
    if "triton" in sys.modules and interpreting():
        return True, "triton interpreter active"
    if not interpreter_wanted():
        return False, ("a CUDA device is visible, so triton runs compiled in this process; interpreter cases "
                       f"run in a process without CUDA, or with {FORCE_ENV}=1")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        if "triton" in sys.modules:
            _reimport_triton()
        else:
            import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001 - reported to the caller, never raised
        return False, f"triton not importable in interpreter mode: {type(e).__name__}: {e}"
    if not interpreting():
        return False, "TRITON_INTERPRET=1 is set but triton did not switch to the interpreter"
    return True, "triton interpreter active"
