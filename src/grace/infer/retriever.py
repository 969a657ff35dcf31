"""``GenerativeRetriever``: a text query → trie-constrained beam search → identifiers → image ids.

The prompt, its left padding and the null image come from :mod:`grace.model.prompt` and
``FlamingoModel.null_vision_features``: the same definitions training uses (:meth:`prompt_inputs` returns
exactly what the model reads first). Results are the distinct images of the finished hypotheses, best
first (several identifiers may name one image, e.g. semantic ids).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grace.errors import GraceError, InputError
from grace.identifiers.idmap import IdentifierMap
from grace.identifiers.trie import Trie, TrieIndex
from grace.infer.beam_search import CausalLMAdapter, beam_search, compile_for_decoding, early_stop_on
from grace.infer.constraint import TrieLogitsProcessor
from grace.io_utils import read_json
from grace.model.export import FEATURE_LAYOUT_NAME, QUERY_MEDIA_KEY
from grace.model.factory import load_pretrained
from grace.model.flamingo import CrossAttentionCache, FlamingoModel, language_model
from grace.model.id_head import identifier_head
from grace.model.prompt import left_pad, prompt_ids
from grace.retriever import Hit, Query, Retriever
from grace.run_layout import RunLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedHit(Hit):
    """A generative hit with why it was retrieved: the ``identifier`` generated, its trie ``path`` (one piece
    per token, e.g. cluster → sub-cluster → leaf for structured ids) and the beam's cumulative log-prob after
    each generated token (``step_scores``, one per token; the last one follows the end-of-identifier token)."""

    identifier: str = ""
    path: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)


class FlamingoAdapter(CausalLMAdapter):
    """Beam-search adapter of a :class:`~grace.model.FlamingoModel` that computes the vision side once per
    query: the perceiver's latents at the prompt (for the null image: once, on one row), and every
    cross-attention layer's keys/values, both expanded to the beams and reused at every step (a beam keeps
    its query's image, so re-ordering beams never changes them). ``cache_vision=False`` is the reference
    path: the vision inputs go through the perceiver and every layer's K/V projection at each step."""

    def __init__(self, model: FlamingoModel, *, vision_features: torch.Tensor | None = None,
                 cache_vision: bool = True, static_cache: bool = False, step_model: Any = None):
        super().__init__(model, input_key="lang_x", static_cache=static_cache, step_model=step_model)
        self.vision_features = vision_features
        self.cache_vision = cache_vision

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                max_new_tokens: int | None = None) -> torch.Tensor:
        batch = input_ids.shape[0]
        if not self.cache_vision:
            features = self.vision_features
            self.extra = {"vision_features": features if features is not None
                          else self.model.null_vision_features(batch).to(input_ids.device)}
            return super().prefill(input_ids, attention_mask, num_beams, max_new_tokens)
        cache = CrossAttentionCache()
        media = self.model.encode_vision(vision_features=self.vision_features, batch_size=batch)
        self.extra = {"media": media, "xattn_cache": cache}
        logits = super().prefill(input_ids, attention_mask, num_beams, max_new_tokens)  # media → beams
        cache.repeat_interleave(num_beams)
        return logits


def make_adapter(model: Any, *, cache_vision: bool = True, static_cache: bool = False,
                 step_model: Any = None, vision_features: torch.Tensor | None = None) -> CausalLMAdapter:
    """A :class:`~grace.model.FlamingoModel` gets a :class:`FlamingoAdapter` (``vision_features`` per query, or the
    null image; the vision side computed once per query unless ``cache_vision`` is False); any HF causal LM gets
    ``input_ids``. ``static_cache`` and ``step_model``: see :class:`~grace.infer.beam_search.CausalLMAdapter`."""
    options = {"static_cache": static_cache, "step_model": step_model}
    if isinstance(model, FlamingoModel):
        return FlamingoAdapter(model, cache_vision=cache_vision, vision_features=vision_features, **options)
    return CausalLMAdapter(model, **options)


class GenerativeRetriever(Retriever):
    """Ranks images by generating their identifiers with a (Flamingo) LM under the trie constraint."""

    name = "generative"

    def __init__(self, model: Any, tokenizer: Any, idmap: Any, trie: TrieIndex, *, num_beams: int = 10,
                 length_penalty: float = 1.0, batch_size: int = 16, device: str | torch.device = "cpu",
                 decode: Any = None, static_cache: bool = True, compile: bool = False,
                 query_media: Callable[[list[str]], np.ndarray] | None = None):
        self.model = model.eval().to(device)
        self.query_media = query_media  # texts -> (N, D) joint-space embeddings: a model trained on TextMedia
        self.tokenizer = tokenizer
        self.idmap = idmap
        self.trie = trie
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.processor = TrieLogitsProcessor(trie.transitions(), device=self.device)
        head = identifier_head(language_model(self.model))
        if head is not None:
            head.check_covers(self.processor.tokens)
        self.max_new_tokens = trie.max_length
        self._decode = decode or self._decode_with_tokenizer
        self._cache: dict[tuple[int, ...], str | None] = {}
        # decoding: a preallocated beam cache; on a GPU a fixed step count (no host syncs), optionally compiled
        self.static_cache = static_cache
        self.early_stop = early_stop_on(self.device)
        self.step_model = compile_for_decoding(self.model, self.device) if compile else None

    def _decode_with_tokenizer(self, tokens: list[int]) -> str | None:
        """Token ids (ending with end-of-chunk) → image id: the trie's own value when it stores one, else
        decode the identifier and look it up in the identifier map; None if unknown."""
        image = self.trie.map_sequence(tokens)
        if image:
            return image
        body = tokens[:-1] if tokens and tokens[-1] == self.tokenizer.eoc_token_id else tokens
        try:
            return self.idmap.to_image(self.tokenizer.decode_identifier(body))
        except (KeyError, GraceError):
            return None

    def image_of(self, tokens: list[int]) -> str | None:
        key = tuple(tokens)
        if key not in self._cache:
            self._cache[key] = self._decode(list(tokens))
        return self._cache[key]

    def prompt_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The model inputs of the first decoding step for these queries: left-padded t2id prompts
        (``lang_x``, ``attention_mask``, ``position_ids``) and, for a Flamingo model, the null image, or with
        ``query_media`` each query's embedding (as its t2id rows saw their text's in training)."""
        inputs = left_pad([prompt_ids(self.tokenizer, text) for text in texts], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if isinstance(self.model, FlamingoModel):
            null = self.model.null_vision_features(len(texts)).to(self.device)
            if self.query_media is not None:
                media = torch.as_tensor(np.asarray(self.query_media(list(texts)), dtype=np.float32))
                if media.shape != (len(texts), null.shape[-1]) or null.shape[2] != 1:
                    raise InputError(f"query embeddings of shape {tuple(media.shape)} for {len(texts)} queries, but the "
                                     f"model reads {tuple(null.shape[2:])} (n_visual_tokens, vis_dim) per query")
                null = media.to(device=self.device, dtype=null.dtype)[:, None, None, :]
            inputs["vision_features"] = null
        return inputs

    @torch.no_grad()
    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        return [[Hit(h.image_id, h.score) for h in hits] for hits in self.search_explained(queries, k)]

    @torch.no_grad()
    def search_explained(self, queries: list[Query], k: int) -> list[list[GeneratedHit]]:
        """:meth:`search`, keeping for each hit the identifier generated, its trie path and step scores."""
        results: list[list[GeneratedHit]] = []
        beams = max(self.num_beams, k)
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start:start + self.batch_size]
            for i, query in enumerate(batch):
                if query.text is None:
                    raise InputError("the generative retriever takes text queries", entry=start + i)
            inputs = self.prompt_inputs([q.text for q in batch])
            # each query's embedding when the model reads one; else the null image, resampled once on one row
            vision = inputs.get("vision_features") if self.query_media is not None else None
            adapter = make_adapter(self.model, static_cache=self.static_cache, step_model=self.step_model,
                                   vision_features=vision)
            out = beam_search(adapter, inputs["lang_x"], inputs["attention_mask"], num_beams=beams,
                              max_new_tokens=self.max_new_tokens, eos_token_id=self.tokenizer.eoc_token_id,
                              constraint=self.processor, length_penalty=self.length_penalty,
                              pad_token_id=self.tokenizer.pad_token_id, early_stop=self.early_stop)
            for row in range(len(batch)):
                hits, seen = [], set()
                for tokens, score, logps in out.detailed_hypotheses(row):
                    image = self.image_of(tokens)
                    if image is not None and image not in seen:
                        seen.add(image)
                        hits.append(self._explain(image, score, tokens, logps))
                results.append(hits[:k])
        return results

    def _explain(self, image: str, score: float, tokens: list[int], logps: list[float]) -> GeneratedHit:
        body = [t for t in tokens if t != self.tokenizer.eoc_token_id]
        return GeneratedHit(image_id=image, score=score, identifier=self.tokenizer.decode_identifier(body),
                            path=[self.tokenizer.decode_identifier([t]) for t in body],
                            step_scores=list(itertools.accumulate(logps)))

    @classmethod
    def load(cls, path: str | Path, *, ids: str | Path | None = None, trie: str | Path | None = None,
             device: str | None = None, trust_remote_code: bool = False, **kwargs: Any) -> GenerativeRetriever:
        """Load ``export_dir`` (model + tokenizer from training's export) with its ``ids/`` and ``trie/``.

        ``ids``/``trie`` override where the identifier map and trie live (default: inside the export
        folder, else the run layout ``RUN/ids/<scheme>``, ``RUN/trie/<scheme>`` for ``RUN/ckpt/<scheme>/export``).
        The trie is the retrieval corpus: an export without one is an error (never widened to every image).
        ``trust_remote_code`` (the user's flag; never read from the export) lets the LM config run its code.
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError("export folder not found", path=path)
        ids_dir = Path(ids) if ids else _find_artefact(path, "ids")
        trie_dir = Path(trie) if trie else _find_artefact(path, "trie")
        model, tokenizer = load_pretrained(path, trust_remote_code=trust_remote_code)
        spec = query_media_spec(path)
        if spec is not None and kwargs.get("query_media") is None:
            raise InputError(f"this model reads each query's embedding from its {spec.get('encoder')!r} text tower "
                             f"({spec.get('dir')}/): pass query_media, or load it with grace eval/search/serve "
                             "(grace.experiments.retrievers)", path=path)
        idmap = IdentifierMap.load(ids_dir)
        trie_obj = Trie.load(trie_dir)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, tokenizer, idmap, trie_obj, device=device, **kwargs)


def query_media_spec(export_dir: str | Path) -> dict | None:
    """The text tower an export's model embeds queries with (``{"encoder", "dir", "dim", "mix"}``: trained on
    ``grace.train.data.TextMedia``), or None for a model that reads the null image."""
    layout = Path(export_dir) / FEATURE_LAYOUT_NAME
    if not layout.is_file():
        return None
    spec = read_json(layout).get(QUERY_MEDIA_KEY)
    return dict(spec) if spec else None


def _find_artefact(export_dir: Path, kind: str) -> Path:
    """``export_dir/kind`` or, in the run layout, ``RUN/ids/<scheme>`` / ``RUN/trie/<scheme>`` for
    ``RUN/ckpt/<scheme>/export``."""
    candidates = [export_dir / kind]
    in_run = RunLayout.of_export(export_dir)
    if in_run is not None:
        layout, scheme = in_run
        candidates.append(layout.ids(scheme) if kind == "ids" else layout.trie(scheme))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise InputError(f"no {kind}/ folder found (looked in {', '.join(map(str, candidates))})", path=export_dir)
