"""``IdentifierMap``: image id ↔ identifier string for one scheme, saved with its config and tokenizer."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from grace.errors import GraceError, InputError
from grace.io_utils import read_json, save_config, write_json

IDS_NAME = "ids.json"
TOKENIZER_DIR = "tokenizer"
# how each scheme's identifiers are tokenised (see tokenization.py)
SCHEME_MODES = {"numeric": "digits", "string": "text", "semantic": "text", "structured": "tokens", "atomic": "tokens",
                "rq": "tokens"}


class IdentifierMap:
    """Unique identifiers of images. ``aliases`` (semantic scheme) are extra identifiers of an image
    (e.g. its other captions) that :meth:`to_image` also resolves; they are never in :meth:`identifiers`."""

    def __init__(self, scheme: str, image_to_id: dict[str, str], config: dict | None = None,
                 aliases: dict[str, str] | None = None):
        if scheme not in SCHEME_MODES:
            raise GraceError(f"unknown identifier scheme {scheme!r}; expected one of {sorted(SCHEME_MODES)}")
        if not image_to_id:
            raise InputError("no images to give identifiers to", entry=scheme)
        dupes = [i for i, c in Counter(image_to_id.values()).items() if c > 1]
        if dupes:
            raise InputError(f"{len(dupes)} identifiers are shared by several images, e.g. {dupes[0]!r}",
                             entry=scheme)
        bad = [k for k, v in image_to_id.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise InputError(f"empty identifier for image {bad[0]!r}", entry=scheme)
        self.scheme = scheme
        self.image_to_id = dict(image_to_id)
        self.config = dict(config or {})
        self.config.setdefault("scheme", scheme)
        self.id_to_image = {v: k for k, v in self.image_to_id.items()}
        self.aliases = {a: img for a, img in (aliases or {}).items() if a not in self.id_to_image}
        self._tokenizer = None

    def __len__(self) -> int:
        return len(self.image_to_id)

    @property
    def mode(self) -> str:
        return SCHEME_MODES[self.scheme]

    def to_id(self, image_id: str) -> str:
        try:
            return self.image_to_id[image_id]
        except KeyError:
            raise InputError(f"image {image_id!r} has no identifier", entry=self.scheme) from None

    def to_image(self, identifier: str) -> str:
        image = self.id_to_image.get(identifier)
        if image is None:
            image = self.aliases.get(identifier)
        if image is None:
            raise InputError(f"unknown identifier {identifier!r}", entry=self.scheme)
        return image

    def identifiers(self, image_ids: Iterable[str] | None = None) -> list[str]:
        """Identifiers of ``image_ids`` (default: every image, in map order)."""
        if image_ids is None:
            return list(self.image_to_id.values())
        return [self.to_id(i) for i in image_ids]

    # ---- tokenizer ---------------------------------------------------------------------------------------
    def tokenizer(self, base: str | None = None, *, hf=None):
        """The IdentifierTokenizer for these identifiers (built once; ``base`` overrides the config's)."""
        if self._tokenizer is None or base is not None or hf is not None:
            from grace.identifiers.tokenization import DEFAULT_BASE, IdentifierTokenizer, scheme_tokens

            new = scheme_tokens(self.image_to_id.values()) if self.mode == "tokens" else []
            self._tokenizer = IdentifierTokenizer.create(base or self.config.get("tokenizer", DEFAULT_BASE),
                                                         mode=self.mode, new_tokens=new, hf=hf)
        return self._tokenizer

    # ---- persistence -------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, with_tokenizer: bool = True) -> Path:
        """Write ``ids.json`` + ``config.json`` (+ ``tokenizer/``) atomically into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if with_tokenizer:
            self.tokenizer().save(directory / TOKENIZER_DIR)
        save_config(directory, self.config)
        write_json(directory / IDS_NAME, {"scheme": self.scheme, "image_to_id": self.image_to_id,
                                           "aliases": self.aliases})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "IdentifierMap":
        directory = Path(directory)
        data = read_json(directory / IDS_NAME)
        if not isinstance(data, dict) or "image_to_id" not in data or "scheme" not in data:
            raise InputError("expected an object with 'scheme' and 'image_to_id'", path=directory / IDS_NAME)
        config = read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
        return cls(data["scheme"], data["image_to_id"], config, aliases=data.get("aliases"))

    def load_tokenizer(self, directory: str | os.PathLike):
        """The tokenizer saved beside the ids in ``directory`` (and keep it for later saves)."""
        from grace.identifiers.tokenization import IdentifierTokenizer

        self._tokenizer = IdentifierTokenizer.load(Path(directory) / TOKENIZER_DIR)
        return self._tokenizer
