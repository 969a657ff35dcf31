"""Pre-train then fine-tune (FLMR / PreFLMR's recipe) through the CLI configs: ``train --direction i2t`` (images
with an instruction retrieve their captions: the mapping network learns to put images in text space), then
``train --init-from`` or ``kbvqa --init-from`` continue from those weights."""

from __future__ import annotations

import pytest
import torch
from test_li_kbvqa import write_wordnet

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.configs import KBVQAConfig, TrainConfig
from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel
from grace.retrieval_baselines.late_interaction.train import train_t2i

SMALL = {"text_encoder": "random:32", "dim": 32, "visual_grid": 3, "batch_size": 8}


def _dataset_json(dataset):
    return dataset.root.parent / "dataset.json"


def test_i2t_pretraining_then_fine_tuning(shared_tiny_dataset, tmp_path):
    pre = TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "pre", fusion="flmr",
                      direction="i2t", steps=25, lr=1e-2, **SMALL)
    stats = train_t2i(pre, progress=False)
    assert stats["direction"] == "i2t" and stats["num_pairs"] > stats["num_images"]
    assert stats["loss_last"] < 0.85 * stats["loss_first"]  # images learn to find their captions
    pretrained = LateInteractionModel.load(tmp_path / "pre")

    fine = TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "fine", fusion="flmr",
                       init_from=tmp_path / "pre", steps=1, lr=0.0, **SMALL)
    assert train_t2i(fine, progress=False)["init_from"] == str(tmp_path / "pre")
    tuned = LateInteractionModel.load(tmp_path / "fine")
    for name, tensor in pretrained.state_dict().items():  # lr 0: the fine-tuned model starts from (is) those weights
        torch.testing.assert_close(tuned.state_dict()[name], tensor, msg=name)

    with pytest.raises(InputError, match="holds a 'flmr' model; this run trains 'mire'"):
        train_t2i(TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "x", fusion="mire",
                              init_from=tmp_path / "pre", steps=1, **SMALL), progress=False)
    with pytest.raises(InputError, match="no mire model"):
        train_t2i(TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "x", fusion="mire",
                              init_from=tmp_path / "nothing", steps=1, **SMALL), progress=False)


def test_kbvqa_fine_tunes_a_pretrained_model(shared_tiny_dataset, tmp_path):
    from grace.retrieval_baselines.late_interaction.kbvqa import run_kbvqa

    train_t2i(TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "pre" / "flmr" / "model",
                          fusion="flmr", direction="i2t", steps=5, **SMALL), progress=False)
    config = KBVQAConfig(out=tmp_path / "kb", dataset=_dataset_json(shared_tiny_dataset),
                         wordnet_dir=write_wordnet(tmp_path / "wn"), kb_size=0, fusions=["flmr"], steps=1, lr=0.0,
                         plaid_nbits=[], dedupe_answers=False, init_from=tmp_path / "pre", **SMALL)
    summary = run_kbvqa(config, progress=False)
    assert summary["models"]["flmr"]["init_from"] == str(tmp_path / "pre")
    pretrained = LateInteractionModel.load(tmp_path / "pre" / "flmr" / "model").state_dict()
    tuned = LateInteractionModel.load(tmp_path / "kb" / "flmr" / "model").state_dict()
    for name, tensor in pretrained.items():
        torch.testing.assert_close(tuned[name], tensor, msg=name)


def test_i2t_needs_an_image_fusion_over_a_frozen_backbone(shared_tiny_dataset, tmp_path):
    for extra in ({"fusion": "none"}, {"fusion": "flmr", "train_backbone": True}):
        with pytest.raises(InputError, match="direction i2t"):
            train_t2i(TrainConfig(dataset=_dataset_json(shared_tiny_dataset), out=tmp_path / "x", direction="i2t",
                                  steps=1, **SMALL, **extra), progress=False)
