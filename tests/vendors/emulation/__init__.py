"""Pure-torch emulations of the vendor libraries the Ascend, Cambricon and MACA
plugins call (torch_npu; torch_mlu + torch_mlu_ops; mcoplib + flash_attn + the
MACA torch build's markers), for tests on a machine without the hardware.

Each emulated op follows the vendor's documented semantics as recorded in
/work/shared/vendors/*.md (the section is named in its docstring) and rejects
arguments of the wrong kind.  Nothing here is installed outside a test:
``install.installed()`` puts the stand-in modules into ``sys.modules`` and takes
them out again.
"""
