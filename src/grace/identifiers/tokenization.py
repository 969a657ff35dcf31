"""``IdentifierTokenizer``: THE one tokenizer shared by training and inference.

It is the base LM tokenizer (default SmolLM2-135M read from its GGUF file, offline) plus the media
tokens ``<image>`` and ``<|endofchunk|>``, a pad token, and the new tokens of a scheme (structured
``<L0_12>`` tokens, atomic ``<img_123>`` tokens). Identifiers are encoded *context-free*: the ids of an
identifier never depend on the text before it, so training and inference build sequences by
concatenating id lists. Three encoding modes, chosen by the scheme:

- ``digits`` (numeric): ``"3 5 1 7"`` → one token per digit (the space only separates digits);
- ``tokens`` (structured, atomic): ``"<L0_1><L1_4>"`` → one new token per ``<...>`` piece;
- ``text`` (string, semantic): the base tokenizer's own encoding of the string.

``save(dir)`` writes the HF tokenizer files and ``grace_tokenizer.json`` (mode, media tokens and the id
of every added token); ``load(dir)`` checks the reloaded ids against that record, so a tokenizer that
lost its new tokens fails loudly instead of training on the wrong ids.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from grace.errors import GraceError, InputError
from grace.io_utils import read_json, write_json

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
EOC_TOKEN = "<|endofchunk|>"
PAD_TOKEN = "<|pad|>"
META_NAME = "grace_tokenizer.json"
MODES = ("digits", "tokens", "text")
TOKEN_PIECE = re.compile(r"<[^<>\s]+>")
DIGITS = "0123456789"
DEFAULT_BASE = "smollm2"


def byte_level_tokenizer():
    """A small real tokenizer (byte-level BPE with no merges: 256 byte tokens) for tests and smoke runs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


def _cache_root() -> Path:
    return Path(os.environ.get("GRACE_CACHE", Path.home() / ".cache" / "grace"))


def _smollm2_tokenizer():
    """SmolLM2's tokenizer: converted from the GGUF once (~10 s), then read from a local cache (~0.5 s)."""
    from transformers import AutoTokenizer

    from grace.data_process.encoders import smollm2_gguf

    directory, gguf_name = smollm2_gguf()
    cache = _cache_root() / "tokenizers" / Path(gguf_name).stem
    if (cache / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    start = time.perf_counter()
    hf = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_name)
    log.info("converted the SmolLM2 tokenizer from %s in %.1f s", gguf_name, time.perf_counter() - start)
    try:  # atomic: a temp folder renamed into place, so a concurrent reader never sees half a tokenizer
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        hf.save_pretrained(tmp)
        try:
            os.replace(tmp, cache)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # a read-only home is not fatal
        log.warning("could not cache the tokenizer at %s: %s", cache, exc)
    return hf


def load_base_tokenizer(name: str = DEFAULT_BASE):
    """The base LM tokenizer: ``smollm2`` (offline, GGUF), ``byte`` (tiny, tests), a local folder or an HF id."""
    if name == "smollm2":
        return _smollm2_tokenizer()
    if name == "byte":
        return byte_level_tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # hub/network/format errors all mean: this tokenizer cannot be loaded
        raise GraceError(f"cannot load tokenizer {name!r}: {str(exc).splitlines()[0]}") from None


def natural_key(token: str) -> tuple:
    """Sort key that orders ``<L0_2>`` before ``<L0_10>``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", token))


def scheme_tokens(identifiers: Iterable[str]) -> list[str]:
    """The distinct ``<...>`` pieces of the identifiers, in natural order (deterministic)."""
    pieces: set[str] = set()
    for identifier in identifiers:
        pieces.update(TOKEN_PIECE.findall(identifier))
    return sorted(pieces, key=natural_key)


class IdentifierTokenizer:
    """Base LM tokenizer + media/pad tokens + scheme tokens, with context-free identifier encoding."""

    def __init__(self, hf, *, mode: str = "text", base: str = DEFAULT_BASE, new_tokens: Sequence[str] = ()):
        if mode not in MODES:
            raise GraceError(f"unknown identifier encoding mode {mode!r}; expected one of {MODES}")
        self.hf, self.mode, self.base = hf, mode, base
        self.new_tokens = list(new_tokens)
        self._pieces: dict[str, int] | None = None

    @classmethod
    def create(cls, base: str = DEFAULT_BASE, *, mode: str = "text", new_tokens: Sequence[str] = (),
               hf=None) -> "IdentifierTokenizer":
        """Load the base tokenizer ``base`` (or take ``hf``) and add media, pad and scheme tokens."""
        from tokenizers import AddedToken

        hf = hf if hf is not None else load_base_tokenizer(base)
        hf.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, EOC_TOKEN]})
        if hf.pad_token is None:
            hf.add_special_tokens({"pad_token": PAD_TOKEN})
        extra = list(new_tokens)
        if mode == "digits":  # numeric ids need one token per digit
            vocab = hf.get_vocab()
            extra += [d for d in DIGITS if d not in vocab]
        if extra:
            hf.add_tokens([AddedToken(t, single_word=False, normalized=False, special=False) for t in extra])
        tok = cls(hf, mode=mode, base=base, new_tokens=extra)
        tok._check_single(extra)
        return tok

    def _check_single(self, tokens: Sequence[str]) -> None:
        ids = self.hf.convert_tokens_to_ids(list(tokens))
        unk = self.hf.unk_token_id
        bad = [t for t, i in zip(tokens, ids) if i is None or (unk is not None and i == unk)]
        if bad:
            raise GraceError(f"tokens {bad[:5]} are not single ids in tokenizer {self.base!r}")

    # ---- ids of the media and pad tokens ---------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.hf.convert_tokens_to_ids(IMAGE_TOKEN)

    @property
    def eoc_token_id(self) -> int:
        return self.hf.convert_tokens_to_ids(EOC_TOKEN)

    @property
    def pad_token_id(self) -> int:
        return self.hf.pad_token_id

    def __len__(self) -> int:
        return len(self.hf)

    # ---- encoding ----------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Token ids of free text (no BOS/EOS added)."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_identifier(self, identifier: str) -> list[int]:
        """Token ids of one identifier alone (context-free). Raises InputError if it cannot be encoded."""
        if self.mode == "text":
            return self.encode_text(identifier)
        if self.mode == "digits":
            pieces = identifier.split(" ")
        else:
            pieces = TOKEN_PIECE.findall(identifier)
            if "".join(pieces) != identifier:
                raise InputError(f"identifier {identifier!r} is not a sequence of <...> tokens")
        if not pieces or any(not p for p in pieces):
            raise InputError(f"identifier {identifier!r} has an empty piece")
        table = self._piece_ids()
        try:  # fast path (1M identifiers): the digit / scheme tokens looked up in a plain dict
            return [table[p] for p in pieces]
        except KeyError:
            pass
        ids = self.hf.convert_tokens_to_ids(pieces)
        unk = self.hf.unk_token_id
        for piece, i in zip(pieces, ids):
            if i is None or (unk is not None and i == unk and piece != self.hf.unk_token):
                raise InputError(f"identifier {identifier!r}: {piece!r} is not a token of this tokenizer")
        return list(ids)

    def _piece_ids(self) -> dict[str, int]:
        if getattr(self, "_pieces", None) is None:
            pieces = list(DIGITS) if self.mode == "digits" else list(self.new_tokens)
            ids = self.hf.convert_tokens_to_ids(pieces)
            unk = self.hf.unk_token_id
            self._pieces = {p: i for p, i in zip(pieces, ids) if i is not None and (unk is None or i != unk)}
        return self._pieces

    def identifier_token_ids(self) -> list[int]:
        """Every token an identifier can contain, and the end-of-chunk that closes it (sorted): what the
        identifier head scores. Text identifiers (string, semantic) may use any token: a one-line error."""
        if self.mode == "text":
            raise GraceError("the identifier head needs a scheme whose identifiers are their own tokens or digits "
                             "(structured, atomic, rq, numeric); text identifiers (string, semantic) can use any "
                             "token of the vocabulary: use output_head full")
        return sorted({*self._piece_ids().values(), self.eoc_token_id})

    def decode_identifier(self, ids: Sequence[int]) -> str:
        """Exact inverse of :meth:`encode_identifier` on valid ids."""
        ids = [int(i) for i in ids]
        if self.mode == "text":
            return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        tokens = self.hf.convert_ids_to_tokens(ids)
        return (" " if self.mode == "digits" else "").join(tokens)

    # ---- persistence -------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        named = [IMAGE_TOKEN, EOC_TOKEN, self.hf.pad_token, *self.new_tokens]
        return {"base": self.base, "mode": self.mode, "vocab_size": len(self), "pad_token": self.hf.pad_token,
                "new_tokens": self.new_tokens,
                "token_ids": dict(zip(named, self.hf.convert_tokens_to_ids(named)))}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the HF tokenizer files + ``grace_tokenizer.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            self.hf.save_pretrained(tmp)
            write_json(tmp / META_NAME, self._meta())
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "IdentifierTokenizer":
        """Reload a saved tokenizer; raises GraceError if any recorded token id changed."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        meta = read_json(directory / META_NAME)
        hf = AutoTokenizer.from_pretrained(directory)
        tok = cls(hf, mode=meta["mode"], base=meta["base"], new_tokens=meta["new_tokens"])
        recorded = meta["token_ids"]
        now = dict(zip(recorded, hf.convert_tokens_to_ids(list(recorded))))
        changed = [t for t in recorded if now[t] != recorded[t]]
        if changed or len(tok) != meta["vocab_size"]:
            raise InputError(f"reloaded tokenizer differs from the saved one (tokens {changed[:5]}, vocab "
                             f"{len(tok)} vs {meta['vocab_size']})", path=directory)
        return tok
