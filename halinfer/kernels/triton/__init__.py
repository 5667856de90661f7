"""Triton kernels shared by the CUDA and MACA plugins, one module per operator family.

Each module holds its ``@triton.jit`` kernel(s) and a launcher taking torch
tensors (the op's contract in halinfer/core/ops), so other CUDA-like plugins
call the launchers directly; ``ops.TritonOps`` is the operator table on them:

  attention_prefill  varlen paged attention (cached prefix + new tokens)
  attention_decode   split-KV paged decode attention, CUDA-graph safe
  store_kv           writing new keys/values into the paged cache (int8 / fp8 / int4: with
                     their per-(token, head) scales and int4 zeros)
  norm               RMSNorm with fused residual add
  rotary             rotary embedding, neox and interleaved, partial rotary
  activation         silu_and_mul, gelu_and_mul (erf and tanh)

Importing a kernel module imports triton; the plugin does so only on first use.
The kernels run on CUDA tensors compiled, and on CPU tensors when this process's
triton is in interpreter mode (see interpret.py).
"""
