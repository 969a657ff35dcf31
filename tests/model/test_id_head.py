"""The identifier head (output_head ids): the full head's logits at the identifier rows, tied to the input
embeddings, a loss that trains, decoding over the identifier columns, one-line errors, the export."""

from __future__ import annotations

import pytest
import torch
from model_helpers import EOC, IMAGE, PAD, VOCAB, prompt, tiny_model

from grace.errors import GraceError
from grace.identifiers.trie import Trie
from grace.infer.beam_search import CausalLMAdapter, beam_search
from grace.infer.constraint import TrieLogitsProcessor
from grace.model import load_pretrained, save_pretrained
from grace.model.flamingo import causal_lm_loss
from grace.model.id_head import IdentifierHead

ID_TOKENS = [200, 201, 202, 203, 210, 211, 212, EOC]
IDS = [[200, 210, EOC], [200, 211, EOC], [201, 210, EOC], [202, 212, EOC], [203, 211, EOC], [203, 212, EOC]]


def _pair():
    """A full-head model and an identifier-head model with the same weights (loaded from the full one)."""
    full = tiny_model()
    ids = tiny_model(output_head="ids", identifier_token_ids=ID_TOKENS)
    ids.load_state_dict(full.state_dict())  # same keys: the head shares the LM head's Parameters
    return full, ids


def test_logits_equal_the_full_heads_at_the_identifier_rows_and_stay_tied():
    full, ids = _pair()
    head = ids.identifier_head
    assert isinstance(head, IdentifierHead) and full.identifier_head is None
    assert head.weight is ids.lang_encoder.get_input_embeddings().weight  # tied to the input rows
    x = prompt(batch=3, length=9)
    with torch.no_grad():
        a, b = full(lang_x=x).logits, ids(lang_x=x).logits
    assert b.shape == (*a.shape[:2], len(ID_TOKENS))
    torch.testing.assert_close(b, a[..., head.token_ids], atol=1e-5, rtol=0)


def _batch(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    for i in range(n):
        target = IDS[i % len(IDS)]
        text = torch.randint(0, 190, (5,), generator=gen).tolist()
        rows.append(text + [IMAGE] + target)
        labels.append([-100] * 6 + target)
    return torch.tensor(rows), torch.tensor(labels)


def test_training_with_the_identifier_head_lowers_the_loss_and_matches_the_masked_full_loss():
    full, ids = _pair()
    x, labels = _batch()
    # the loss is the cross-entropy over the identifier columns: the full logits' identifier rows, renormalised
    ids.train()
    full_logits = full(lang_x=x).logits[..., ids.identifier_head.token_ids]
    expected = causal_lm_loss(full_logits, ids.identifier_head.columns(labels))
    torch.testing.assert_close(ids(lang_x=x, labels=labels).loss, expected, atol=1e-5, rtol=1e-5)
    opt = torch.optim.AdamW(ids.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = ids(lang_x=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]
    # only identifier rows of the tied embedding received gradient through the head (and the inputs' rows)
    grad = ids.lang_encoder.get_input_embeddings().weight.grad
    assert grad[ID_TOKENS].abs().sum() > 0 and grad[250:256].abs().sum() == 0


def test_a_label_outside_the_identifier_tokens_is_a_one_line_error():
    _, ids = _pair()
    x, labels = _batch(4)
    labels[0, -2] = 5
    with pytest.raises(GraceError, match="label token 5 is not an identifier token"):
        ids(lang_x=x, labels=labels)
    with pytest.raises(GraceError, match="identifier head"):
        ids.generate(x[:, :6], max_new_tokens=2)


def test_decoding_rows_are_gathered_once_and_again_after_the_weight_changes():
    _, ids = _pair()
    head = ids.identifier_head
    with torch.no_grad():
        first = head.rows()[0]
        assert head.rows()[0] is first
        head.weight[head.token_ids[0]] += 1.0  # an in-place update bumps the version
        assert head.rows()[0] is not first


class MaskedFullAdapter(CausalLMAdapter):
    """The full model with every non-identifier logit at -inf: its log-softmax is the ``ids`` normalisation."""

    def __init__(self, model, columns):
        super().__init__(model, input_key="lang_x")
        self.keep = columns

    def _forward(self, *args, **kwargs):
        logits = super()._forward(*args, **kwargs)
        out = torch.full_like(logits, float("-inf"))
        out[:, self.keep] = logits[:, self.keep]
        return out


@pytest.mark.parametrize("fanout", [True, False])
def test_beam_search_over_the_identifier_columns_ranks_as_the_masked_full_model(fanout):
    full, ids = _pair()
    trie = Trie(IDS)
    proc = TrieLogitsProcessor(trie.transitions(), max_fanout_entries=1 << 20 if fanout else 0)
    x = prompt(batch=3, length=8)
    mask = torch.ones_like(x)
    kwargs = dict(num_beams=4, max_new_tokens=3, eos_token_id=EOC, constraint=proc, pad_token_id=PAD)
    adapter = CausalLMAdapter(ids, input_key="lang_x")
    assert adapter.columns.tolist() == sorted(ID_TOKENS)
    got = beam_search(adapter, x, mask, **kwargs)
    want = beam_search(MaskedFullAdapter(full, adapter.columns), x, mask, **kwargs)
    for row in range(3):
        a, b = got.hypotheses(row), want.hypotheses(row)
        assert [h[0] for h in a] == [h[0] for h in b] and len(a) == 4
        assert [h[1] for h in a] == pytest.approx([h[1] for h in b], abs=1e-5)


def test_the_export_records_the_head_and_reloads_it(tmp_path):
    _, ids = _pair()
    save_pretrained(ids, tmp_path / "export")
    again, _ = load_pretrained(tmp_path / "export")
    assert again.config.output_head == "ids" and again.config.identifier_token_ids == sorted(ID_TOKENS)
    x = prompt(batch=2, length=7)
    with torch.no_grad():
        torch.testing.assert_close(again(lang_x=x).logits, ids(lang_x=x).logits)


def test_the_trie_must_stay_inside_the_head_and_text_identifiers_cannot_use_it():
    from grace.identifiers.tokenization import IdentifierTokenizer

    _, ids = _pair()
    with pytest.raises(GraceError, match="trie emits token 199"):
        ids.identifier_head.check_covers(torch.tensor([200, 199]))
    with pytest.raises(GraceError, match="text identifiers"):
        IdentifierTokenizer.create("byte", mode="text").identifier_token_ids()
    tok = IdentifierTokenizer.create("byte", mode="tokens", new_tokens=["<A_1>", "<A_2>"])
    assert tok.identifier_token_ids() == sorted([*tok.hf.convert_tokens_to_ids(["<A_1>", "<A_2>"]), tok.eoc_token_id])
    with pytest.raises(GraceError, match="output_head ids needs the identifier tokens"):
        tiny_model(output_head="ids")
    with pytest.raises(GraceError, match="output_head must be full or ids"):
        tiny_model(output_head="vocab")
    assert VOCAB > max(ID_TOKENS)
