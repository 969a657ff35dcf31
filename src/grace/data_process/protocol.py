"""Evaluation protocols: what a held-out image's pseudo-queries may be made from, written into every result.

- ``image-only`` (GRACE's Flickr30K setting; the default): a held-out image's pseudo-queries come from the
  image alone — the captions of its nearest training images (``knn-captions``), the training captions nearest
  to it in the dense retriever's joint space (``lit-captions``), the project's own Flamingo trained to caption
  the training images (``self-caption``), or a captioning model (``captioner:MODEL``) — never from its own
  annotations.
- ``tagged`` (a corpus whose images carry tags, e.g. a photo library): pseudo-queries come from the image's
  metadata (``keywords``). Every retriever must then be given the same metadata, and the BM25 control over
  it is in every table.

Both pass the leak filter (:mod:`grace.data_process.leak_filter`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grace.errors import GraceError


@dataclass(frozen=True)
class Protocol:
    """A named protocol: the pseudo-query generators it allows (by name or ``prefix:``), its default, and
    whether the dense baselines must index the pseudo-queries too (``expand_documents``: when they are the
    images' own metadata, every retriever is given them)."""

    name: str
    generators: tuple[str, ...]
    default_generator: str
    expand_documents: bool = False

    def allows(self, generator: str) -> bool:
        return any(generator == g or (g.endswith(":") and generator.startswith(g)) for g in self.generators)

    def check_generator(self, generator: str) -> str:
        """``generator`` if this protocol allows it and it can run here; else a one-line error."""
        if not self.allows(generator):
            raise GraceError(f"--protocol {self.name} does not allow the pseudo-query generator {generator!r} "
                             f"(allowed: {', '.join(g + 'MODEL' if g.endswith(':') else g for g in self.generators)})"
                             + ("; the keywords generator reads the image's own annotations: use --protocol tagged"
                                if generator == "keywords" else ""))
        if generator.startswith("captioner:"):
            check_hub_reachable(generator.removeprefix("captioner:"), "--generator")
        return generator


PROTOCOLS: dict[str, Protocol] = {
    "image-only": Protocol("image-only", ("knn-captions", "lit-captions", "self-caption", "captioner:"),
                           "knn-captions"),
    "tagged": Protocol("tagged", ("keywords",), "keywords", expand_documents=True),
}
DEFAULT_PROTOCOL = "image-only"


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown one is a one-line error naming the flag."""
    if name not in PROTOCOLS:
        raise GraceError(f"unknown --protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def offline() -> bool:
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_reachable(model_id: str, option: str) -> None:
    """A model that is not a local folder needs the hub: refuse it up front when offline."""
    if offline() and not Path(model_id).is_dir():
        raise GraceError(f"{option}: {model_id!r} is not a local folder and needs the model hub, but the hub is "
                         f"offline (HF_HUB_OFFLINE=1); give a saved model folder or another generator")
