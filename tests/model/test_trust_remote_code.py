"""trust: whether an export's LM config may run code comes from the user's flag only, never from a file."""

from __future__ import annotations

import contextlib
import json
import logging

from grace.model import create_model, load_pretrained
from grace.model.config import FlamingoConfig, resolve_config

#: code an export could carry: importing it (transformers runs a copy from its modules cache) writes MARKER
EVIL = '''
from pathlib import Path
from transformers import LlamaConfig
Path(MARKER).write_text("yes")


class EvilConfig(LlamaConfig):
    pass
'''


def _export_asking_for_trust(tmp_path):
    model = create_model("tiny", vocab_size=256, image_token_id=254, eoc_token_id=255)
    export = tmp_path / "export"
    model.save_pretrained(export)
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "trust_remote_code": True}))
    lm_config = json.loads((export / "lm" / "config.json").read_text())
    (export / "lm" / "config.json").write_text(json.dumps({**lm_config, "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    (export / "lm" / "evil.py").write_text(EVIL.replace("MARKER", repr(str(tmp_path / "code_ran"))))
    return export


def test_trust_an_export_asking_for_remote_code_runs_none_without_the_flag(tmp_path, caplog):
    export = _export_asking_for_trust(tmp_path)
    with caplog.at_level(logging.WARNING):
        model, _ = load_pretrained(export)
    assert not (tmp_path / "code_ran").exists()  # the file's "trust_remote_code": true was ignored
    assert f"{export / 'config.json'} asks for trust_remote_code; ignored" in caplog.text
    assert model.config.name == "tiny"


def test_trust_the_user_flag_is_what_allows_remote_code(tmp_path):
    export = _export_asking_for_trust(tmp_path)
    with contextlib.suppress(ValueError):  # the test's config class has no model class: the code ran first
        load_pretrained(export, trust_remote_code=True)
    assert (tmp_path / "code_ran").read_text() == "yes"


def test_trust_is_not_a_model_config_field():
    assert "trust_remote_code" not in {f.name for f in FlamingoConfig.__dataclass_fields__.values()}
    assert "trust_remote_code" not in json.dumps(resolve_config("openflamingo-3b").__dict__)
