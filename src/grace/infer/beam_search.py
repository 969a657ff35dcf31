"""A batched, fully vectorised beam search over ``model.forward`` with a KV cache and a trie constraint.

Why our own loop rather than ``model.generate``: HF's logits processors never see the beam indices, so
a per-row trie state (one node id per beam) cannot be re-indexed there; the alternative — re-walking
every row's generated suffix through the CSR table each step — costs O(length) per step. Here the loop
owns the beam order, so the constraint state is gathered with the same indices as the KV cache, and
each step is O(1) tensor ops. The selection logic mirrors transformers' vectorised ``_beam_search``
(top-2K continuations, a finished pool of ``num_beams`` hypotheses, length penalty, the default early
stop heuristic), so with the GENRE reference constraint it returns the same ranking as
``model.generate(prefix_allowed_tokens_fn=...)`` (tested).

The model side is an :class:`DecoderAdapter`: ``prefill`` the prompt once per query, expand the cache to
the beams, then ``step`` one token per beam with ``reorder`` between steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from grace.fallbacks import record_fallback
from grace.hf_compat import cache_kwarg, output_cache, takes_logits_to_keep
from grace.infer.constraint import Constraint
from grace.infer.kv_cache import StaticBeamCache, reorder_cache, repeat_cache, static_cache_supported
from grace.model.flamingo import language_model
from grace.model.id_head import identifier_head

NEG = -1.0e9


class DecoderAdapter(Protocol):
    """Incremental decoding interface the beam loop drives. Logits span the vocabulary, or, where ``columns``
    is a tensor, those token ids only (the identifier head: :mod:`grace.model.id_head`)."""

    columns: torch.Tensor | None

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                max_new_tokens: int | None = None) -> torch.Tensor:
        """Run the (B, L) prompt; keep a cache expanded to B*num_beams rows (room for ``max_new_tokens``
        steps, when given); return (B*num_beams, V)."""

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Re-index the cache rows with flat beam indices (B*num_beams,)."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B*num_beams,); return next-token logits (B*num_beams, V)."""


class CausalLMAdapter:
    """Adapter for any Hugging Face causal LM (``input_ids``, ``attention_mask``, ``position_ids``, cache).

    ``extra`` kwargs (e.g. ``vision_features``) go to every forward call, expanded to the beams when
    their first dim equals the batch size; ``input_key`` renames ``input_ids`` (``lang_x`` for Flamingo).
    ``static_cache``: after the prompt, keep the beams' keys/values in a preallocated
    :class:`~grace.infer.kv_cache.StaticBeamCache` (written in place, only generated positions re-ordered)
    where the LM supports it; otherwise, and by default, transformers' growing ``DynamicCache``.
    ``step_model``: what runs the one-token steps (e.g. :func:`compile_for_decoding`'s); the prompt always
    runs on ``model``.
    """

    def __init__(self, model: Any, *, input_key: str = "input_ids", position_ids: bool = True,
                 static_cache: bool = False, step_model: Any = None, **extra: Any):
        self.model = model
        self.step_model = step_model or model
        self.lm = language_model(model)
        head = identifier_head(self.lm)
        self.columns = head.token_ids if head is not None else None  # the logits' token ids (None: all)
        self.input_key = input_key
        self.use_position_ids = position_ids
        self.static_cache = static_cache
        self.extra = extra
        # the prompt's logits are needed at its last position only (a Flamingo model passes this to its LM)
        self.last_logits_only = takes_logits_to_keep(self.lm)
        self.past = None
        self.static: StaticBeamCache | None = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, extra: dict,
                 model: Any = None) -> torch.Tensor:
        past = self.static.cache if self.static is not None else self.past
        kwargs = {self.input_key: ids, "attention_mask": mask, "use_cache": True, cache_kwarg(self.model): past}
        if self.use_position_ids:
            kwargs["position_ids"] = positions
        if self.last_logits_only:
            kwargs["logits_to_keep"] = 1
        out = (model or self.model)(**kwargs, **extra)
        if self.static is None:
            self.past = output_cache(out)
        return out.logits[:, -1, :].float()

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                max_new_tokens: int | None = None) -> torch.Tensor:
        self.past, self.static = None, None
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        batch = input_ids.shape[0]
        logits = self._forward(input_ids, attention_mask, positions, dict(self.extra))
        if self.static_cache and max_new_tokens and static_cache_supported(self.lm, self.past):
            self.static = StaticBeamCache(self.lm, self.past, attention_mask, num_beams, max_new_tokens)
            self.past = None
        else:
            self.past = repeat_cache(self.past, num_beams)
            self.mask = attention_mask.repeat_interleave(num_beams, 0)
        self.positions = positions[:, -1].repeat_interleave(num_beams, 0)
        self.extra = {k: (v.repeat_interleave(num_beams, 0) if torch.is_tensor(v) and v.shape[0] == batch else v)
                      for k, v in self.extra.items()}
        return logits.repeat_interleave(num_beams, 0)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.static is not None:  # a query's beams share its prompt: mask and positions stay
            self.static.reorder(beam_idx)
            return
        self.past = reorder_cache(self.past, beam_idx)
        self.mask = self.mask[beam_idx]
        self.positions = self.positions[beam_idx]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.static is not None:
            mask = self.static.open_next()
        else:
            mask = self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.positions = self.positions + 1
        return self._forward(tokens[:, None], mask, self.positions[:, None], self.extra, self.step_model)


def early_stop_on(device: torch.device | str) -> bool:
    """Whether ``beam_search`` should stop early on ``device``: on a CPU the per-step check is cheap; on a GPU
    it is a host sync, so the loop runs its fixed step count (same answers)."""
    return torch.device(device).type == "cpu"


class _CompiledOrEager:
    """A compiled callable that falls back to the eager one, for good, the first time compiling fails."""

    def __init__(self, eager: Any, compiled: Any):
        self.eager, self.compiled = eager, compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler/backend failure: decode eagerly instead
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                record_fallback("decode step", "compiled", "eager", f"torch.compile failed ({reason})")
                self.compiled = None
        return self.eager(*args, **kwargs)


def runs_compiled(step_model: Any) -> bool:
    """Whether a decode step from :func:`compile_for_decoding` still runs compiled (not the eager fallback)."""
    return isinstance(step_model, _CompiledOrEager) and step_model.compiled is not None


def compile_for_decoding(model: Any, device: torch.device | str) -> Any:
    """``model`` compiled for one-token decode steps (``torch.compile``, CUDA graphs through
    ``mode="reduce-overhead"``; use with ``static_cache`` so every step has the same shapes and addresses).
    On a CPU, or where compiling fails, the eager model: a warning, never an error."""
    if torch.device(device).type != "cuda":
        record_fallback("decode step", "compiled", "eager", f"--compile needs a CUDA device (got {device})")
        return model
    return _CompiledOrEager(model, torch.compile(model, mode="reduce-overhead", dynamic=False))


@dataclass
class BeamOutput:
    """Finished hypotheses per query, best first: ``sequences`` (B, R, T) generated tokens (padded with
    ``pad``), ``lengths`` (B, R), ``scores`` (B, R) length-normalised log-probs (``NEG`` = no hypothesis),
    and ``token_logprobs`` (B, R, T): the (constrained) log-prob of each generated token, whose prefix sums
    are the beam's score after each step."""

    sequences: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    token_logprobs: torch.Tensor

    def hypotheses(self, row: int) -> list[tuple[list[int], float]]:
        """Valid (tokens, score) pairs of one query, best first."""
        return [(tokens, score) for tokens, score, _ in self.detailed_hypotheses(row)]

    def detailed_hypotheses(self, row: int) -> list[tuple[list[int], float, list[float]]]:
        """Valid (tokens, score, per-token log-probs) triples of one query, best first."""
        out = []
        for seq, length, score, logps in zip(self.sequences[row].tolist(), self.lengths[row].tolist(),
                                              self.scores[row].tolist(), self.token_logprobs[row].tolist()):
            if score > NEG / 10:
                out.append((seq[:length], score, logps[:length]))
        return out


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather along dim 1 of (B, K, ...) with a (B, K') index."""
    shape = index.shape + tensor.shape[2:]
    idx = index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand(shape)
    return tensor.gather(1, idx)


def _column_lookup(columns: torch.Tensor) -> torch.Tensor:
    """token id → its column in logits over ``columns`` (-1: not a column)."""
    lookup = torch.full((int(columns.max()) + 1,), -1, dtype=torch.long, device=columns.device)
    lookup[columns] = torch.arange(columns.numel(), device=columns.device)
    return lookup


def _to_vocabulary(log_probs: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Log-probs over ``columns`` → over token ids 0..max(columns) (-inf elsewhere), for the masking path."""
    full = log_probs.new_full((log_probs.shape[0], int(columns.max()) + 1), float("-inf"))
    return full.index_copy_(1, columns, log_probs)


def _top_children(log_probs: torch.Tensor, cands: tuple[torch.Tensor, torch.Tensor], running_scores: torch.Tensor,
                  keep: int, sink: int, column_of: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The ``keep`` best (beam, child) continuations per query among each beam's F trie children:
    scores, source beams, tokens (B, keep) and the child nodes (B * keep,) they lead to. Padding children
    (and tokens beyond the LM's vocabulary) score -inf, as masked tokens do on the vocabulary-wide path.
    ``column_of`` maps token ids to the columns of ``log_probs`` when they are the identifier head's."""
    tokens, children = cands  # (B*K, F)
    batch, num_beams = running_scores.shape
    vocab, width = log_probs.shape[-1], tokens.shape[-1]
    if column_of is None:
        cols, outside = tokens, tokens >= vocab
    else:
        outside = tokens >= column_of.numel()
        cols = column_of[tokens.clamp_max(column_of.numel() - 1)]
        outside = outside | (cols < 0)
    child_lp = log_probs.gather(1, cols.clamp(0, vocab - 1))
    child_lp = child_lp.masked_fill((children == sink) | outside, float("-inf"))
    scores = (child_lp.view(batch, num_beams, width) + running_scores[:, :, None]).view(batch, -1)
    tokens, children = tokens.view(batch, -1), children.view(batch, -1)
    if scores.shape[1] < keep:  # fewer candidates than kept continuations: pad with dead ones
        pad = keep - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((batch, pad), float("-inf"))], dim=1)
        tokens = torch.cat([tokens, tokens.new_zeros((batch, pad))], dim=1)
        children = torch.cat([children, children.new_full((batch, pad), sink)], dim=1)
    top_scores, top_index = torch.topk(scores, k=keep)
    top_beam = (top_index // width).clamp_max(num_beams - 1)
    return top_scores, top_beam, tokens.gather(1, top_index), children.gather(1, top_index).view(-1)


@torch.no_grad()
def beam_search(adapter: DecoderAdapter, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                num_beams: int, max_new_tokens: int, eos_token_id: int, constraint: Constraint | None = None,
                length_penalty: float = 1.0, pad_token_id: int = 0, early_stop: bool = True) -> BeamOutput:
    """Beam search for (B, L) left-padded prompts; returns ``num_beams`` finished hypotheses per prompt.

    A hypothesis finishes when it emits ``eos_token_id`` (under a trie: the end-of-chunk token that
    closes every identifier) or reaches ``max_new_tokens``. Scores are sum-log-probs / length**penalty.
    ``early_stop=False`` runs exactly ``max_new_tokens`` steps (the trie depth) with no host synchronisation
    inside the loop, for GPUs and compiled steps; the answers are the same (a query that cannot improve
    stops adding hypotheses either way).
    """
    batch = input_ids.shape[0]
    device = input_ids.device
    keep = 2 * num_beams
    top_mask = torch.arange(keep, device=device) < num_beams
    running = torch.full((batch, num_beams, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = running.clone()
    running_logp = torch.zeros((batch, num_beams, max_new_tokens), device=device)
    finished_logp = running_logp.clone()
    finished_len = torch.zeros((batch, num_beams), dtype=torch.long, device=device)
    running_scores = torch.zeros((batch, num_beams), device=device)
    running_scores[:, 1:] = NEG
    finished_scores = torch.full((batch, num_beams), NEG, device=device)
    is_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
    improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)
    state = constraint.init_state(batch * num_beams, device) if constraint is not None else None
    batch_offset = torch.arange(batch, device=device)[:, None] * num_beams

    logits = adapter.prefill(input_ids, attention_mask, num_beams, max_new_tokens)
    prompt_rows = input_ids.repeat_interleave(num_beams, 0)
    columns = adapter.columns  # the identifier head's token ids: logits (and their softmax) over those only
    columns = columns.to(device) if columns is not None else None
    column_of = _column_lookup(columns) if columns is not None else None
    for cur in range(max_new_tokens):
        log_probs = torch.log_softmax(logits, dim=-1)
        cands = constraint.candidates(state) if constraint is not None else None
        if cands is not None:  # rank the K x F trie children only
            top_scores, top_beam, top_tokens, top_state = _top_children(log_probs, cands, running_scores, keep,
                                                                         constraint.sink, column_of)
        else:
            if columns is not None:
                log_probs = _to_vocabulary(log_probs, columns)
            if constraint is not None:
                flat_seqs = None  # only a sequence-reading constraint (the GENRE reference) needs the rows
                if constraint.needs_sequences:
                    flat_seqs = torch.cat([prompt_rows, running[:, :, :cur].reshape(batch * num_beams, cur)], dim=1)
                log_probs = constraint.apply(flat_seqs, log_probs, state)
            vocab = log_probs.shape[-1]
            log_probs = log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]
            top_scores, top_index = torch.topk(log_probs.view(batch, -1), k=keep)
            top_beam = top_index // vocab
            top_tokens = top_index % vocab
            if constraint is not None:
                flat_src = (top_beam + batch_offset).view(-1)
                top_state = constraint.advance(constraint.select(state, flat_src), top_tokens.view(-1))
        top_seqs = _gather(running, top_beam)
        top_seqs[:, :, cur] = top_tokens
        top_logp = _gather(running_logp, top_beam)
        top_logp[:, :, cur] = top_scores - running_scores.gather(1, top_beam)
        done = (top_tokens == eos_token_id) | (cur + 1 >= max_new_tokens)

        # live beams: the best num_beams continuations that did not finish
        live_scores = top_scores + done.float() * NEG
        next_index = torch.topk(live_scores, k=num_beams)[1]
        running = _gather(top_seqs, next_index)
        running_logp = _gather(top_logp, next_index)
        running_scores = live_scores.gather(1, next_index)
        beam_idx = (_gather(top_beam, next_index) + batch_offset).view(-1)
        if constraint is not None:
            state = constraint.select(top_state, (next_index + torch.arange(batch, device=device)[:, None] * keep).view(-1))

        # finished pool: merge the newly finished (among the top num_beams) and keep the best num_beams
        just_done = done & top_mask[None, :]
        normed = top_scores / float(cur + 1) ** length_penalty
        normed = normed + (~improvable).float() * NEG + (~just_done).float() * NEG
        merged_seqs = torch.cat([finished, top_seqs], dim=1)
        merged_logp = torch.cat([finished_logp, top_logp], dim=1)
        merged_scores = torch.cat([finished_scores, normed], dim=1)
        merged_len = torch.cat([finished_len, torch.full_like(top_tokens, cur + 1)], dim=1)
        merged_done = torch.cat([is_finished, just_done], dim=1)
        pick = torch.topk(merged_scores, k=num_beams)[1]
        finished, finished_scores = _gather(merged_seqs, pick), merged_scores.gather(1, pick)
        finished_logp = _gather(merged_logp, pick)
        finished_len, is_finished = merged_len.gather(1, pick), merged_done.gather(1, pick)

        # HF's default heuristic: stop a query when its best live beam cannot beat its worst finished one
        best_live = running_scores[:, :1] / float(cur + 1) ** length_penalty
        worst_done = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], torch.full_like(finished_scores, NEG))
        improvable = improvable & (best_live > worst_done).any(dim=-1, keepdim=True)
        if cur + 1 >= max_new_tokens or (early_stop and (not bool(improvable.any()) or bool(done.all()))):
            break
        adapter.reorder(beam_idx)
        logits = adapter.step(running[:, :, cur].reshape(-1))
    return BeamOutput(sequences=finished, lengths=finished_len, scores=finished_scores, token_logprobs=finished_logp)
