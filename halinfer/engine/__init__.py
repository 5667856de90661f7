"""Front ends: the synchronous LLMEngine, AsyncLLM, and what they share (input checks,
the output processor, engine building)."""
