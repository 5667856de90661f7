"""Paged KV block manager: ref-counted blocks, prefix caching by block hash.

Blocks are numbered 0..num_blocks-1.  A sequence owns an ordered list of block
ids; token i of the sequence lives in block ``block_ids[i // block_size]`` at
offset ``i % block_size``.  With prefix caching, a block that holds
``block_size`` computed tokens is registered under a hash of its tokens and of
every token before it (a chain hash), so another sequence whose prompt starts
the same way reuses it instead of recomputing.  A block whose ref count drops to
zero goes to the free queue but keeps its hash until it is reused for something
else (least recently freed first), so finished requests still serve as cache.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

from .mm_inputs import block_extra
from .sequence import Sequence


def chain_hash(parent: bytes | None, seq: Sequence, b: int, bs: int) -> bytes:
    """Block b's key: a 128-bit BLAKE2b digest of the parent block's key, the block's token ids,
    and the hashes of the images whose tokens it holds (image tokens all share one placeholder id).
    A fixed-size digest keeps hashing and comparing a key O(block_size); a key nesting its parent
    tuple made a long prompt's registration quadratic (about 20 ms for 7,680 tokens)."""
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(array("q", seq.token_ids[b * bs:(b + 1) * bs]).tobytes())
    extra = block_extra(seq.mm_inputs, b, bs) if seq.mm_inputs else ()
    if extra:   # a text block before any image keys as it would in a text-only prompt
        h.update(repr(extra).encode())
    return h.digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        assert num_blocks > 0 and block_size > 0
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = enable_prefix_caching
        self.ref = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self.hash_to_block: dict[bytes, int] = {}
        # Free blocks in eviction order (oldest first).  OrderedDict gives O(1) removal
        # when a cached free block is revived by a prefix hit.
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hits = 0     # prompt tokens served from the prefix cache (statistics)
        self.queries = 0  # prompt tokens looked up

    # -- capacity --------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks seq needs to hold num_tokens tokens in total."""
        need = -(-num_tokens // self.block_size)
        return max(0, need - len(seq.block_ids))

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= self.num_free

    # -- allocation --------------------------------------------------------------
    def _take_free(self) -> int:
        bid, _ = self.free.popitem(last=False)
        h = self.block_hash[bid]
        if h is not None:  # evict its old identity
            if self.hash_to_block.get(h) == bid:
                del self.hash_to_block[h]
            self.block_hash[bid] = None
        self.ref[bid] = 1
        return bid

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Give seq enough blocks for num_tokens tokens in total."""
        n = self.blocks_needed(seq, num_tokens)
        if n > self.num_free:
            raise RuntimeError(f"out of KV blocks: need {n}, {self.num_free} free")
        for _ in range(n):
            seq.block_ids.append(self._take_free())

    def match_prefix(self, seq: Sequence) -> int:
        """On admission of a sequence with no blocks: attach cached blocks for the
        longest cached prefix of its tokens.  Returns the number of tokens covered.
        At least one token is always left to compute (its logits are needed)."""
        assert not seq.block_ids
        seq.block_hashes = []
        if not self.prefix_caching:
            return 0
        bs = self.block_size
        max_full = (seq.num_tokens - 1) // bs
        parent = None
        for b in range(max_full):
            h = chain_hash(parent, seq, b, bs)
            bid = self.hash_to_block.get(h)
            if bid is None:
                break
            if self.ref[bid] == 0:
                del self.free[bid]
            self.ref[bid] += 1
            seq.block_ids.append(bid)
            seq.block_hashes.append(h)
            parent = h
        return len(seq.block_ids) * bs

    def count_lookup(self, seq: Sequence, covered: int) -> None:
        """Statistics of one admitted prompt (counted once, not per admission attempt)."""
        if self.prefix_caching:
            self.queries += seq.num_tokens
            self.hits += covered

    def register_full_blocks(self, seq: Sequence) -> None:
        """Hash the blocks that became full of computed tokens the host knows (with async
        scheduling the newest token may still be on the device: its block waits)."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        full = min(min(seq.num_computed, seq.num_tokens) // bs, len(seq.block_ids))
        parent = seq.block_hashes[-1] if seq.block_hashes else None
        for b in range(len(seq.block_hashes), full):
            h = chain_hash(parent, seq, b, bs)
            bid = seq.block_ids[b]
            if h not in self.hash_to_block:
                self.hash_to_block[h] = bid
                self.block_hash[bid] = h
            seq.block_hashes.append(h)
            parent = h

    def free_seq(self, seq: Sequence) -> None:
        # Release in reverse so a sequence's tail is evicted before its head
        # (heads are the blocks other prompts are likelier to share).
        for bid in reversed(seq.block_ids):
            self.ref[bid] -= 1
            assert self.ref[bid] >= 0
            if self.ref[bid] == 0:
                self.free[bid] = None
                if self.block_hash[bid] is None:  # nothing cached in it: reuse it first
                    self.free.move_to_end(bid, last=False)
        seq.block_ids = []
        seq.block_hashes = []

    def reset_prefix_cache(self) -> None:
        """Forget every cached block (blocks in use keep their contents, unhashed)."""
        self.hash_to_block.clear()
        self.block_hash = [None] * self.num_blocks

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0
