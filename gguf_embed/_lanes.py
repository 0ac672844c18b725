"""How an engine decodes token sequences: its three lanes (mixed into
:class:`~gguf_embed.engine.Engine`).

- the **main lane**: sequences sorted by length and packed into as few ``llama_decode`` calls
  as fit (one context, sized by :class:`_PackPlan`), under the engine's :class:`DecodeLock`
  taken per decode, queries first;
- the **side lane** (:meth:`Lanes.embed_side`): a second packed context with a quarter of the
  threads, decoding at the same time as the main lane (a server's small requests while a
  large one's pieces hold the main lane; see batcher.py);
- the **long lane**: an input longer than a pack, decoded alone in its own context, chunk by
  chunk for causal last-token models (its state kept between chunks).

The engine loads the model and checks inputs; this module only schedules decodes, tuned by
:class:`EngineOptions` (re-exported by :mod:`gguf_embed.engine`, its public home).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _llama
from ._context import Context, DecodeLock
from .errors import EngineError
from .protocol import Embeddings, Prepared

LONG_FLASH_ATTN_CPU_MAX = 4096  # tokens; see EngineOptions.long_flash_attn


@dataclass(frozen=True)
class EngineOptions:
    """Tuning knobs; the defaults are what measured fastest (see BENCHMARKS.md)."""

    batch_tokens: int | None = None  # tokens packed per llama_decode (None: 512)
    ubatch_tokens: int | None = None  # physical batch of causal models (n_ubatch); None: 512
    max_seqs: int = 64  # sequences packed into one decode
    # One KV cache for the whole pack.  Without flash attention that makes attention span every
    # sequence in it (25 % slower at 2k-token packs); with it, masked blocks are skipped and a
    # shared cache is as fast as one stream per sequence, in a fraction of the memory.
    kv_unified: bool = True
    flash_attn: bool | None = True  # None: llama.cpp decides; True skips masked blocks
    # Inputs longer than a pack are decoded alone, chunk by chunk, in a second context. On the
    # CPU, ggml's flash-attention kernel wins up to ~4k tokens and loses beyond (0.6B shape:
    # 2k 168 vs 157 tokens/s, 8k 72 vs 85, 30k 26 vs 32), so by default that context uses it
    # with a GPU (faster, and no 32k-token attention matrix in memory) or up to 4,096 tokens.
    long_flash_attn: bool | None = None  # None: as above; True / False: always / never


class Lanes:
    """The decoding half of :class:`~gguf_embed.engine.Engine` (which sets the attributes
    declared here and calls :meth:`_start_lanes` once the model is loaded)."""

    n_threads: int
    n_gpu_layers: int
    _model: Any  # the llama_model pointer
    n_embd: int
    max_tokens: int
    vocab_only: bool
    chunked: bool  # a causal last-token model: a long input can be decoded in chunks
    options: EngineOptions

    def _start_lanes(self) -> None:
        self._lock = DecodeLock()  # one decode at a time, queries first
        self._long_lock = threading.Lock()  # a long input's chunks share one context's state
        self._side_lock = threading.Lock()  # the side lane's context (embed_side)
        self._side: Context | None = None
        self._packed: Context | None = None
        self._long: Context | None = None

    def _free_lanes(self) -> None:
        """Free the contexts, once no decode is in flight on any lane (the caller closes the
        engine meanwhile: see :meth:`Engine.close`)."""
        for ctx in (self._packed, self._long, self._side):
            if ctx is not None:
                ctx.free()
        self._packed = self._long = self._side = None

    if TYPE_CHECKING:  # the engine's (input checks, and whether it is closed)
        def _check_open(self) -> None: ...

        def _embed(self, prepared: Prepared | Sequence[np.ndarray], dimensions: int | None,
                   urgent: bool, threads: int | None, *, side: bool) -> Embeddings: ...

    @property
    def side_threads(self) -> int:
        """Threads of the side lane (:meth:`embed_side`): a quarter of the engine's, at least
        one; 0 where there is none (one thread, or layers on a GPU)."""
        if self.n_threads < 2 or self.n_gpu_layers > 0 or self.vocab_only:
            return 0
        return max(1, self.n_threads // 4)

    def embed_side(self, prepared: Prepared | Sequence[np.ndarray], *,
                   dimensions: int | None = None) -> Embeddings:
        """:meth:`embed_prepared` in a second context, with :attr:`side_threads` threads, at
        the same time as the main context's decodes: a server embeds small requests there
        while a large request's pieces hold the main context (see batcher.py), and gives
        those pieces ``threads=n_threads - side_threads`` meanwhile, so that the two lanes
        share the cores instead of taking turns.  Created on first use."""
        if not self.side_threads:
            raise EngineError("this engine has no side lane (one thread, or a GPU)")
        return self._embed(prepared, dimensions, False, None, side=True)

    def _embed_sequences(self, seqs: list[np.ndarray], urgent: bool = False,
                         threads: int | None = None, side: bool = False) -> np.ndarray:
        out = np.empty((len(seqs), self.n_embd), dtype=np.float32)

        def decode(pending: list[int]) -> np.ndarray:
            some = [seqs[j] for j in pending]
            return self._decode_side(some) if side else self._decode_packed(some, urgent,
                                                                              threads)

        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        plan = self._plan
        pending: list[int] = []
        used = 0
        for i in order:
            n = len(seqs[i])
            if n > plan.seq_capacity:
                out[i] = self._embed_long(seqs[i], urgent)
                continue
            if pending and (used + n > plan.pack_tokens or len(pending) == plan.n_seqs):
                out[pending] = decode(pending)
                pending, used = [], 0
            pending.append(i)
            used += n
        if pending:
            out[pending] = decode(pending)
        return out

    def _decode_packed(self, seqs: list[np.ndarray], urgent: bool,
                       threads: int | None = None) -> np.ndarray:
        with self._lock.hold(urgent):  # per decode: a waiting query goes next
            self._check_open()
            threads = threads or _llama.threads_for(self._model, sum(map(len, seqs)),
                                                    self.n_threads)  # a query: one, often
            return self._packed_context().decode(seqs, threads)

    def _decode_side(self, seqs: list[np.ndarray]) -> np.ndarray:
        with self._side_lock:
            self._check_open()
            if self._side is None:
                self._side = self._new_packed()
            return self._side.decode(seqs, self.side_threads)

    def _embed_long(self, tokens: np.ndarray, urgent: bool) -> np.ndarray:
        # The long context keeps the input's state between its chunks: it is this input's
        # until the last chunk, while the engine's lock is taken per chunk (per decode).
        with self._long_lock:
            need = len(tokens)
            with self._lock.hold(urgent):
                self._check_open()
                if self._long is None or self._long.n_ctx < need:
                    if self._long is not None:
                        self._long.free()
                    size = min(self.max_tokens, _round_up(max(need, 4096), 256))
                    self._long = Context(self, n_ctx=size, n_batch=self._plan.n_batch,
                                          n_ubatch=self._plan.n_ubatch, n_seqs=1, unified=True,
                                          flash_attn=self.long_flash_attn(size))
            return self._long.decode_chunked(tokens, lambda: self._lock.hold(urgent))

    def long_flash_attn(self, n_ctx: int) -> bool:
        """Whether the context for inputs longer than a pack, of ``n_ctx`` tokens, uses flash
        attention."""
        choice = self.options.long_flash_attn
        if choice is not None:
            return choice
        return self.n_gpu_layers > 0 or n_ctx <= LONG_FLASH_ATTN_CPU_MAX

    @functools.cached_property
    def _plan(self) -> _PackPlan:
        """Sizes of the packing context, known before (and without) creating it."""
        opts = self.options
        pack = opts.batch_tokens or 512
        if self.chunked:
            n_batch = pack
            n_ubatch = min(opts.ubatch_tokens or 512, n_batch)
            n_seqs = max(1, min(opts.max_seqs, n_batch))
            if opts.kv_unified:
                capacity, n_ctx = n_batch, n_batch
            else:
                capacity = min(n_batch, max(256, _round_up(2 * n_batch // n_seqs, 64)))
                n_ctx = capacity * n_seqs
        else:  # each input whole in one physical batch; pack up to batch_tokens
            n_batch = max(pack, self.max_tokens)
            n_ubatch = n_batch
            n_seqs = max(1, min(opts.max_seqs, n_batch))
            capacity, n_ctx = self.max_tokens, n_batch
        return _PackPlan(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_seqs=n_seqs,
                         seq_capacity=capacity, pack_tokens=pack,
                         unified=opts.kv_unified or not self.chunked)

    def _packed_context(self) -> Context:
        """Created on first use: a run of long inputs only never allocates it."""
        if self._packed is None:
            self._packed = self._new_packed()
        return self._packed

    def _new_packed(self) -> Context:
        plan = self._plan
        return Context(self, n_ctx=plan.n_ctx, n_batch=plan.n_batch, n_ubatch=plan.n_ubatch,
                       n_seqs=plan.n_seqs, unified=plan.unified,
                       flash_attn=self.options.flash_attn)


@dataclass(frozen=True)
class _PackPlan:
    """The packing context's sizes; ``seq_capacity`` and ``pack_tokens`` decide which inputs
    are packed and how many tokens go into one decode."""

    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seqs: int
    seq_capacity: int
    pack_tokens: int
    unified: bool


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple
