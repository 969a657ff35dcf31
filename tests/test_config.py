"""The command line over dataclasses: HfArgumentParser flags, a config file under explicit flags, typed
KEY=VALUE settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grace.cli import build_parser
from grace.config import dataclass_from_args, key_values
from grace.errors import InputError
from grace.experiments.configs import AblateConfig, EvalConfig
from grace.train.config import TrainConfig


def test_flags_are_typed_and_booleans_lists_and_repeats_parse():
    args = build_parser().parse_args(["eval", "--dataset", "d.json", "--ks", "1", "20", "--num-beams", "7",
                                      "--no-progress", "--retriever", "generative:A", "--retriever", "bm25:B", "bm25:C"])
    config = dataclass_from_args(EvalConfig, args)
    assert config.dataset == Path("d.json") and config.ks == [1, 20] and config.num_beams == 7
    assert config.progress is False and config.compile is False  # a default comes from the dataclass
    assert config.retriever == ["generative:A", "bm25:B", "bm25:C"]  # --retriever accumulates
    # a boolean flag is a switch: it never takes the query that follows it as its value
    args = build_parser().parse_args(["search", "--run", "R", "--no-compile", "--json", "red heart", "rocket"])
    assert args.json is True and args.compile is False and args.queries == ["red heart", "rocket"]


def test_a_config_file_gives_values_and_explicit_flags_win(tmp_path):
    path = tmp_path / "ablate.json"
    path.write_text(json.dumps({"steps": 11, "lr": 0.5, "schemes": ["atomic"], "train_overrides": ["max_length=64"]}))
    args = build_parser().parse_args(["ablate", "--config", str(path), "--steps", "200", "--train-overrides",
                                      "max_length=96", "warmup_steps=30"])
    config = dataclass_from_args(AblateConfig, args)
    # 200 is also the dataclass default: an explicit flag wins even when it equals the default
    assert config.steps == 200 and config.lr == 0.5 and config.schemes == ["atomic"]
    assert config.train_overrides == ["max_length=96", "warmup_steps=30"]
    path.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(InputError, match=r"unknown config keys \['stepz'\]"):
        dataclass_from_args(AblateConfig, build_parser().parse_args(["ablate", "--config", str(path)]))


def test_key_values_are_typed_by_the_target_dataclass():
    values = key_values(["max_length=96", "lr=1", "output_head=ids", "init_from=/x/y", "i2id_views=3"],
                        "--train-overrides", TrainConfig)
    assert values == {"max_length": 96, "lr": 1.0, "output_head": "ids", "init_from": "/x/y", "i2id_views": 3}
    assert isinstance(values["lr"], float)
    untyped = key_values(["pairs=true", "k=5", 'templates=["{}", "an emoji of {}"]', "name=abc"], "--pseudo-queries")
    assert untyped == {"pairs": True, "k": 5, "templates": ["{}", "an emoji of {}"], "name": "abc"}
    for items, message in [(["max_len=96"], "not a TrainConfig field"), (["max_length"], "KEY=VALUE"),
                           (["max_length=9.5"], "takes an integer"), (["lr=fast"], "takes a number")]:
        with pytest.raises(InputError, match=message):
            key_values(items, "--train-overrides", TrainConfig)
