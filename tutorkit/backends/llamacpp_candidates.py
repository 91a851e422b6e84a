"""Best-of-n candidates decoded together in one llama.cpp context (llamacpp_local.py's complete_n).

llama-cpp-python's high-level `Llama` holds one sequence, so Tim's n candidates for a turn would be
decoded one after another. Here a second context on the same model holds n sequences: the prompt's
KV (read in the main context, which keeps the prompt cache) is copied into sequence 0 and shared by
all n, and every step decodes one token of each candidate in one call. Measured with the embedded
model on 2 cores, prompt ~1200 tokens (docs/performance.md): 4 candidates together 87.6 generated
tokens/s on the AVX2-only build against 43.0 one at a time (116 vs 54 with AVX-512).

Sampling mirrors `Llama.create_completion`'s chain (penalties, top-k 40, typical 1.0, top-p, min-p
0.05, temperature, seeded draw; greedy at temperature 0), so a candidate is drawn from the same
distribution as one generated alone; candidate i uses seed + i, as before. Only llama.cpp's C API
(llama_cpp's ctypes bindings) is used, with the main `Llama`'s public attributes.

May import: the standard library, llama_cpp (optional: only llamacpp_local.py imports this module,
after checking that llama_cpp is installed), tutorkit.backends.
"""

from __future__ import annotations

import ctypes
import threading

import llama_cpp as C

from tutorkit.backends import BackendError, Sampling

# create_completion's defaults that Sampling does not carry
TOP_K, TYPICAL_P, MIN_P, REPEAT_PENALTY, FREQUENCY_PENALTY = 40, 1.0, 0.05, 1.0, 0.0


class CandidateContext:
    """A llama.cpp context beside `llm` for `n` sequences of up to `n_ctx` tokens in all (the
    prompt's cells are shared: the KV is unified), on `threads` cores."""

    def __init__(self, llm, n: int, n_ctx: int, threads: int, lora_path: str | None):
        self.llm, self.n, self.n_ctx, self.ctx = llm, n, n_ctx, None
        params = C.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n, n
        params.n_seq_max, params.kv_unified = n, True
        # The prompt's KV comes from the main context: its layout must match (V transposed or not).
        params.flash_attn_type = llm.context_params.flash_attn_type
        # No token-by-token hand-off to Python here (the candidates come back whole), so every core
        # the prompt may use decodes too: 2 threads 87.6 tokens/s for 4 candidates, 1 thread 58.5.
        params.n_threads = params.n_threads_batch = threads
        self.ctx = C.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise BackendError(f"llama.cpp could not make a context for {n} candidates of {n_ctx} tokens")
        self.batch = C.llama_batch_init(n, 0, n)
        if lora_path:  # the main context's adapter is its own; this one loads the file too (freed with the model)
            adapter = C.llama_adapter_lora_init(llm.model, str(lora_path).encode("utf-8"))
            if not adapter or C.llama_set_adapters_lora(self.ctx, (C.llama_adapter_lora_p_ctypes * 1)(adapter), 1,
                                                        (ctypes.c_float * 1)(1.0)):  # fmt: skip
                self.close()
                raise BackendError(f"llama.cpp could not apply the LoRA adapter {lora_path} for candidates")
        self.memory = C.llama_get_memory(self.ctx)
        self.vocab = C.llama_model_get_vocab(llm.model)

    def close(self) -> None:
        """Frees the context (this object holds `llm`, so its model outlives the context)."""
        if self.ctx:
            C.llama_batch_free(self.batch)
            C.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:
        self.close()

    def generate(self, prompt: list[int], sampling: Sampling, cancelled: threading.Event) -> tuple[list[str], int]:
        """(n replies, tokens generated). The main context is left holding the prompt (less its
        last token) and the prompt cache gains that state, so the conversation's next turn starts there."""
        room = min(self.llm.n_ctx(), self.n_ctx - (self.n - 1) * sampling.max_tokens) - len(prompt)
        if room <= 0:
            raise BackendError(f"the prompt ({len(prompt)} tokens) leaves no room in llama.cpp's context "
                               f"({self.llm.n_ctx()} tokens)")  # fmt: skip
        self._read_prompt(prompt[:-1])
        samplers = [self._sampler(sampling, i) for i in range(self.n)]
        try:
            return self._decode(prompt, samplers, min(sampling.max_tokens, room), sampling.stop, cancelled)
        finally:
            for sampler in samplers:
                C.llama_sampler_free(sampler)
            C.llama_memory_clear(self.memory, True)

    def _read_prompt(self, tokens: list[int]) -> None:
        """The KV of `tokens` into sequence 0 here, read in the main context from its longest cached
        state on (as create_completion would), and that context's state cached again."""
        llm, cache = self.llm, self.llm.cache
        if cache is not None:
            try:
                item = cache[tokens]
                if llm.longest_token_prefix(item.input_ids[: item.n_tokens].tolist(), tokens) > self._evaluated(tokens):
                    llm.load_state(item)
            except KeyError:  # nothing cached shares a prefix
                pass
        llm.n_tokens = self._evaluated(tokens)  # what is kept; the KV after it goes (eval() would do that too)
        C.llama_memory_seq_rm(C.llama_get_memory(llm.ctx), -1, llm.n_tokens, -1)
        if llm.n_tokens < len(tokens):
            llm.eval(tokens[llm.n_tokens :])
            if cache is not None:
                cache[tokens] = llm.save_state()
        C.llama_memory_clear(self.memory, True)
        if tokens:
            size = C.llama_state_seq_get_size(llm.ctx, 0)
            state = (ctypes.c_uint8 * size)()
            size = C.llama_state_seq_get_data(llm.ctx, state, size, 0)
            if not size or not C.llama_state_seq_set_data(self.ctx, state, size, 0):
                raise BackendError("llama.cpp could not copy the prompt's state to the candidates' context")
            for seq in range(1, self.n):
                C.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)  # shared cells: no copy of the KV

    def _evaluated(self, tokens: list[int]) -> int:
        """How many of `tokens` the main context holds already."""
        return self.llm.longest_token_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)

    def _sampler(self, sampling: Sampling, i: int):
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda sampler: C.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        add(C.llama_sampler_init_penalties(self.llm.n_vocab(), self.llm.last_n_tokens_size, REPEAT_PENALTY,
                                           FREQUENCY_PENALTY, sampling.presence_penalty))  # fmt: skip
        if sampling.temperature <= 0:
            add(C.llama_sampler_init_greedy())
            return chain
        add(C.llama_sampler_init_top_k(TOP_K))
        add(C.llama_sampler_init_typical(TYPICAL_P, 1))
        add(C.llama_sampler_init_top_p(sampling.top_p, 1))
        add(C.llama_sampler_init_min_p(MIN_P, 1))
        add(C.llama_sampler_init_temp(sampling.temperature))
        add(C.llama_sampler_init_dist(C.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed + i))
        return chain

    def _decode(self, prompt, samplers, max_tokens, stops, cancelled) -> tuple[list[str], int]:
        n, batch = self.n, self.batch
        pieces: list[bytearray] = [bytearray() for _ in range(n)]
        replies: list[str | None] = [None] * n
        # The prompt's last token once, in all n sequences: its logits are every candidate's first draw.
        pos = len(prompt) - 1
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = prompt[-1], pos, n, 1
        for seq in range(n):
            batch.seq_id[0][seq] = seq
        rows = [0] * n  # each sequence's row of logits in the last decode
        generated = 0
        for _ in range(max_tokens):
            if C.llama_decode(self.ctx, batch) != 0:
                raise BackendError("llama.cpp could not decode the candidates (context full)")
            pos += 1
            batch.n_tokens = 0
            for seq in range(n):
                if replies[seq] is not None:
                    continue
                token = C.llama_sampler_sample(samplers[seq], self.ctx, rows[seq])
                if C.llama_vocab_is_eog(self.vocab, token):
                    replies[seq] = pieces[seq].decode("utf-8", errors="ignore")
                    continue
                generated += 1
                pieces[seq] += self.llm.detokenize([token])
                text = pieces[seq].decode("utf-8", errors="ignore")
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:  # create_completion's stop: the reply ends before the stop text
                    replies[seq] = text[:cut]
                    continue
                i = rows[seq] = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, 1
                batch.seq_id[i][0] = seq
                batch.n_tokens += 1
            if batch.n_tokens == 0 or cancelled.is_set():
                break
        return [r if r is not None else p.decode("utf-8", errors="ignore") for r, p in zip(replies, pieces)], generated
