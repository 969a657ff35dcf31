"""A changed setting rebuilds exactly the stages downstream of it, and nothing else (a tiny emoji run whose
lower stages are stand-ins; every build is counted from the log the user sees)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from pipeline_fakes import fake_stages

from data_packages import EMOJI, needs
from grace.experiments.ablate import run_ablation
from grace.experiments.configs import AblateConfig

#: every stage of the base run (structured ids, the two controls; a test and a val corpus each)
SCHEME = ["ids/structured", "shards/structured", "trie/structured", "trie/structured-val", "train/structured",
          "eval/structured"]
TRAINING = ["train/structured", "eval/structured"]
BM25 = ["build/bm25/index", "build/bm25/index-val", "eval/bm25"]
SIBLING = ["build/sibling/index", "build/sibling/index-val", "eval/sibling"]
EVERY = ["data", "features", "pseudo-queries", *SCHEME, *BM25, *SIBLING]

#: the change → the stages it must rebuild
CHANGES = {
    "encoder": ({"encoder": "efficientnet-b0"}, [s for s in EVERY if s != "data"]),
    "seed": ({"seed": 1}, [*SCHEME, *BM25, *SIBLING]),  # the split's seed is held (split_seed=0)
    "limit": ({"limit": 70}, EVERY),
    "scheme setting": ({"scheme_overrides": ["k=5"]}, SCHEME),
    "training setting": ({"steps": 2}, TRAINING),
    "pseudo-query generator": ({"pseudo_query_generator": "lit-captions"},
                               ["pseudo-queries", "shards/structured", *TRAINING, *BM25]),
}


def built_stages(output: str) -> list[str]:
    """The stages the log says were built, in order."""
    return re.findall(r"^\[([^\]]+)\] built in", output, flags=re.MULTILINE)


@needs(EMOJI)
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_rebuilds_exactly_the_stages_downstream_of_it(change, tmp_path, capsys):
    base = AblateConfig(run=tmp_path / "run", benchmark="emoji", limit=60, split_seed=0, schemes=["structured"],
                        baselines=["none"], steps=1, num_beams=4)
    run_ablation(base, stages=fake_stages())
    assert sorted(built_stages(capsys.readouterr().out)) == sorted(EVERY)
    run_ablation(base, stages=fake_stages())
    assert built_stages(capsys.readouterr().out) == []  # unchanged: every stage reused
    settings, rebuilt = CHANGES[change]
    run_ablation(replace(base, **settings), stages=fake_stages())
    assert sorted(built_stages(capsys.readouterr().out)) == sorted(rebuilt)
