"""`grace ids build` and `grace trie build` end to end on the tiny dataset (byte tokenizer)."""

from __future__ import annotations

from grace.cli import main
from grace.data_process.pseudo_queries import PseudoQuerySet, save_pseudo_queries
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


def test_text_clustered_ids_from_the_cli_read_the_given_pseudo_queries(tiny_dataset, tmp_path):
    import json

    data = tmp_path / "data" / "dataset.json"
    test_ids = [r.image_id for r in tiny_dataset.split("test")]
    pseudo = tmp_path / "pq.json"
    made = PseudoQuerySet({i: [f"caption number {n}"] for n, i in enumerate(test_ids)}, "captioner:test", ["test"])
    save_pseudo_queries(pseudo, made, tiny_dataset, protocol="image-only")
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "semantic", "--tokenizer", "byte",
                 "--out", str(tmp_path / "no-texts")]) == 2  # semantic ids read pseudo-queries: none given
    edited = json.loads(pseudo.read_text()) | {test_ids[0]: ["edited by hand"]}
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    (tmp_path / "edited.config.json").write_text((tmp_path / "pq.config.json").read_text())
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "semantic", "--tokenizer", "byte",
                 "--pseudo-queries", str(tmp_path / "edited.json"), "--out", str(tmp_path / "edited")]) == 2
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "semantic", "--tokenizer", "byte",
                 "--pseudo-queries", str(pseudo), "--out", str(tmp_path / "semantic")]) == 0
    assert IdentifierMap.load(tmp_path / "semantic").to_id(test_ids[1]) == "caption number 1"
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "structured", "--tokenizer", "byte",
                 "--cluster-on", "text", "--k", "2", "--c", "8", "--pseudo-queries", str(pseudo),
                 "--out", str(tmp_path / "structured")]) == 0
    config = IdentifierMap.load(tmp_path / "structured").config
    assert config["cluster_on"] == "text" and config["pseudo_queries_digest"]
    assert not (tmp_path / "structured" / "features").exists()  # text clusters need no image features


def test_rq_ids_from_the_cli_quantise_a_features_cache(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data" / "dataset.json"
    out = tmp_path / "ids-rq"
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "rq", "--levels", "2", "--codebook", "8",
                 "--reserve-first", "image", "--features-cache", str(tmp_path / "features"), "--out", str(out),
                 "--tokenizer", "byte"]) == 0
    assert "24 images, 24 unique ids" in capsys.readouterr().out
    idmap = IdentifierMap.load(out)
    assert idmap.config["levels"] == 2 and idmap.config["codebook"] == 8
    assert all(i.startswith("<M_image><Q0_") and i.count("<Q") == 3 for i in idmap.identifiers())
    assert main(["ids", "build", "--dataset", str(data), "--scheme", "rq", "--levels", "1", "--codebook", "2",
                 "--features-cache", str(tmp_path / "features"), "--out", str(tmp_path / "small")]) == 2
    assert "too small to make every id unique" in capsys.readouterr().err
