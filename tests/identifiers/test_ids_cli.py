"""`grace ids build` and `grace trie build` end to end on the tiny dataset (byte tokenizer)."""

from __future__ import annotations

from grace.cli import main
from grace.identifiers import IdentifierMap, Trie


def test_ids_and_trie_cli(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data" / "dataset.json"
    out = tmp_path / "ids"
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "numeric", "--out", str(out),
                 "--tokenizer", "byte", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "24 images, 24 unique ids" in printed and "new tokens" in printed
    idmap = IdentifierMap.load(out)
    assert idmap.config["seed"] == 3 and len(idmap) == 24
    assert main(["trie", "build", "--ids", str(out), "--dataset", str(data), "--split", "test",
                 "--out", str(tmp_path / "trie")]) == 0
    assert "trie over 4 identifiers (test)" in capsys.readouterr().out
    assert len(Trie.load(tmp_path / "trie")) == 4


def test_cli_errors_are_one_line(tiny_dataset, tmp_path, capsys):
    assert main(["ids", "build", "--dataset", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["ids", "build", "--scheme", "numeric"]) == 2
    assert "--dataset" in capsys.readouterr().err
