"""fuzz: a Karpathy JSON, however malformed, loads or fails with a one-line InputError — never a traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace.data_process.dataset import load_karpathy
from grace.errors import InputError

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["raw", "tokens", "x"]), inner, max_size=2), max_leaves=6)
sentence = st.fixed_dictionaries({"raw": values}) | values
entry = st.fixed_dictionaries({}, optional={
    "filename": values | st.just("a.png"), "filepath": values, "split": values | st.sampled_from(["train", "test"]),
    "image_id": values, "cocoid": values, "sentences": st.lists(sentence, max_size=3) | values})
document = st.fixed_dictionaries({"images": st.lists(entry | values, max_size=4)}) | values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=document)
def test_fuzz_malformed_karpathy_json_is_a_one_line_input_error(tmp_path, data):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    try:
        dataset = load_karpathy(path, check_files=False)
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert all(isinstance(t, str) and t for record in dataset.images for t in record.texts)


@pytest.mark.parametrize("entry, message", [
    ({"filename": "a.png", "sentences": [{"tokens": ["a"]}]}, "string 'raw'"),
    ({"filename": "a.png", "sentences": "a cat"}, "'sentences' must be a list"),
    ({"filename": ["a.png"], "sentences": ["a cat"]}, "'filename' must be a string"),
    ({"filename": "a.png", "split": 3, "sentences": ["a cat"]}, "'split' must be a string"),
])
def test_malformed_entries_name_the_file_and_the_entry(tmp_path, entry, message):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": [{"filename": "b.png", "sentences": ["ok"]}, entry]}))
    with pytest.raises(InputError, match=message) as info:
        load_karpathy(path, check_files=False)
    assert "entry 1" in str(info.value)


def test_a_json_that_is_not_utf8_is_a_one_line_input_error(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_bytes('{"images": [{"filename": "caf\u00e9.png"}]}'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_karpathy(path, check_files=False)
