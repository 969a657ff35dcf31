"""Start a model from existing weights (``grace train --init-from``): one of our exports (a model that
memorises a new corpus without starting over) or an OpenFlamingo checkpoint (``checkpoint.pt`` of
``openflamingo/OpenFlamingo-3B-vitl-mpt1b``: perceiver, gated cross-attention, LM embeddings).

Both share our key layout (``perceiver.*``, ``lang_encoder.gated_cross_attn_layers.*``, the LM's own names).
The vocabularies differ, so embedding rows are matched by token string: the base LM's tokens and the media
tokens keep their trained rows wherever the two tokenizers put them; tokens the source never had (this
corpus's identifier tokens) keep their fresh initialisation. Everything else is copied by name; a tensor
whose shape differs is an error, and what the source lacks (OpenFlamingo: the LM's decoder weights, which
come from the LM's hub id) keeps the model's own weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from grace.errors import InputError

log = logging.getLogger(__name__)

#: the tokens OpenFlamingo's factory adds to its LM tokenizer, in its order (then a pad token if none)
OPENFLAMINGO_ADDED = ("<|endofchunk|>", "<image>")
OPENFLAMINGO_CHECKPOINT = "checkpoint.pt"


def _gathered(param: torch.nn.Parameter) -> Any:
    """A ZeRO-3 partitioned parameter, gathered for rank 0 to write (re-partitioned on exit)."""
    if hasattr(param, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=0)
    return nullcontext()


def _resolve(source: str | Path) -> Path:
    """A local export folder or checkpoint file; else a hub repo id holding OpenFlamingo's checkpoint.pt."""
    path = Path(source)
    if path.exists():
        return path
    if str(source).count("/") == 1 and not str(source).startswith((".", "/")):
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(str(source), OPENFLAMINGO_CHECKPOINT))
        except Exception as err:  # noqa: BLE001 - offline, no such repo, no such file: one line
            raise InputError(f"cannot fetch {OPENFLAMINGO_CHECKPOINT} from the hub repo {source!r}: "
                             f"{str(err).splitlines()[0]}") from None
    raise InputError("--init-from: no such export folder or checkpoint file", path=source)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle / zip errors of a corrupt or foreign file
        raise InputError(f"cannot read the checkpoint: {str(err).splitlines()[0]}", path=path) from None
    for key in ("model_state_dict", "state_dict", "model"):  # OpenFlamingo's training checkpoints wrap it
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise InputError("not a state dict of tensors", path=path)
    return data


def _token_strings(tokenizer: Any) -> list[str]:
    hf = getattr(tokenizer, "hf", tokenizer)
    return hf.convert_ids_to_tokens(list(range(len(hf))))


def openflamingo_tokens(tokenizer: Any, rows: int) -> list[str]:
    """OpenFlamingo's vocabulary for the LM ``tokenizer`` is built on: the base tokens, then its added tokens
    (``<|endofchunk|>``, ``<image>``, and a pad token when the base has none: ours stands for it)."""
    ours = _token_strings(tokenizer)
    base = min(tokenizer.image_token_id, tokenizer.eoc_token_id)  # our first added token: the base ends there
    names = ours[:base] + list(OPENFLAMINGO_ADDED)
    if rows == base + 3:
        names.append(ours[tokenizer.pad_token_id])
    if rows != len(names):
        raise InputError(f"the checkpoint's embedding has {rows} rows, but OpenFlamingo on this LM's tokenizer has "
                         f"{base} base tokens + 2 or 3 added: is it for another LM?")
    return names


def _copy_rows(param: torch.nn.Parameter, source: torch.Tensor, target_tokens: Sequence[str],
               source_tokens: Sequence[str], rank: int) -> tuple[int, int]:
    """Copy the rows of tokens both vocabularies have; return (copied, kept at init)."""
    where = {token: row for row, token in enumerate(source_tokens)}
    pairs = [(row, where[token]) for row, token in enumerate(target_tokens) if token in where and row < param.shape[0]]
    with _gathered(param):
        if param.shape[1:] != source.shape[1:]:
            raise InputError(f"embedding width {tuple(source.shape[1:])} in the source, {tuple(param.shape[1:])} here")
        if rank == 0 and pairs:
            dst, src = (torch.tensor(x) for x in zip(*pairs))
            param.data[dst] = source[src].to(param.dtype)
        total = param.shape[0]
    return len(pairs), total - len(pairs)


def init_from(model: Any, source: str | Path, tokenizer: Any, *, rank: int = 0) -> dict:
    """Load ``source`` (our export folder, an OpenFlamingo ``checkpoint.pt``, or its hub repo id) into
    ``model`` (before DeepSpeed wraps it; a ZeRO-3 partitioned model is written parameter by parameter).
    Returns what was loaded: tensors copied, embedding rows matched and new, source keys unused."""
    from grace.model.export import TOKENIZER_DIR, WEIGHTS_NAME

    path = _resolve(source)
    if path.is_dir():
        from safetensors.torch import load_file

        from grace.identifiers.tokenization import IdentifierTokenizer

        if not (path / WEIGHTS_NAME).is_file():
            raise InputError(f"no {WEIGHTS_NAME}: not a grace model export", path=path)
        state = load_file(str(path / WEIGHTS_NAME))
        source_tokens = _token_strings(IdentifierTokenizer.load(path / TOKENIZER_DIR)) \
            if (path / TOKENIZER_DIR).is_dir() else None
        kind = "export"
    else:
        state, source_tokens, kind = _read_checkpoint(path), None, "openflamingo"
    state = {k.removeprefix("module."): v for k, v in state.items()}
    params = dict(model.named_parameters(remove_duplicate=False))
    embeddings = {name for name, p in params.items()
                  if p is model.lang_encoder.get_input_embeddings().weight
                  or (model.lang_encoder.get_output_embeddings() is not None
                      and p is model.lang_encoder.get_output_embeddings().weight)}
    report = {"source": str(path), "kind": kind, "copied": 0, "rows_copied": 0, "rows_new": 0, "unused": []}
    target_tokens = _token_strings(tokenizer)
    done: set[int] = set()
    for name, tensor in state.items():
        param = params.get(name)
        if param is None:
            report["unused"].append(name)
            continue
        if id(param) in done:  # an alias (OpenFlamingo keeps the cross-attention under two names)
            continue
        done.add(id(param))
        if name in embeddings:
            vocab = source_tokens or openflamingo_tokens(tokenizer, tensor.shape[0])
            copied, new = _copy_rows(param, tensor, target_tokens, vocab, rank)
            report["rows_copied"] += copied
            report["rows_new"] += new
            continue
        with _gathered(param):
            if tuple(param.shape) != tuple(tensor.shape):
                raise InputError(f"{name}: shape {tuple(tensor.shape)} in the source, {tuple(param.shape)} in this "
                                 "model: a different model config", path=path)
            if rank == 0:
                param.data.copy_(tensor.to(param.dtype))
        report["copied"] += 1
    if not report["copied"] and not report["rows_copied"]:
        raise InputError("no tensor of the source matches this model's parameters", path=path)
    if report["unused"]:
        from grace.fallbacks import record_fallback

        record_fallback("init-from", f"every tensor of {path}", f"{report['copied']} tensors copied",
                        f"{len(report['unused'])} source tensors have no parameter here ({report['unused'][0]}, ...)")
    log.info("init-from %s (%s): %d tensors copied, embedding rows %d matched / %d new", path, kind,
             report["copied"], report["rows_copied"], report["rows_new"])
    return report
