"""A share link's sidebar values: each kept, clamped or refused, and every refusal says why (gptviz.links)."""

import pytest

from gptviz import links, ui_state
from gptviz.hosting import Policy

PRIVATE = Policy()
HOSTED = Policy.from_env({"GPTVIZ_HOSTED": "1"})  # bundled, gpt2, distilgpt2; 128 new tokens; no local directories


def check(params: dict, policy: Policy = PRIVATE) -> links.LinkCheck:
    return links.check(params, policy, ui_state.model_choices(policy), ui_state.LOCAL_CHOICE)


@pytest.mark.parametrize("params,policy,note", [
    ({"new": "-5"}, PRIVATE, "Ignored new='-5' from the link: max new tokens must be a whole number ≥ 1, got -5."),
    ({"new": "0"}, PRIVATE, "Ignored new='0' from the link: max new tokens must be a whole number ≥ 1, got 0."),
    ({"new": "abc"}, PRIVATE, "Ignored new='abc' from the link: 'abc' is not a whole number."),
    ({"new": "1e9"}, PRIVATE, "Ignored new='1e9' from the link: '1e9' is not a whole number."),
    ({"new": "2.5"}, PRIVATE, "Ignored new='2.5' from the link: '2.5' is not a whole number."),
    ({"new": ""}, PRIVATE, "Ignored new='' from the link: '' is not a whole number."),
    ({"temperature": "0"}, PRIVATE, "Ignored temperature='0' from the link: temperature must be > 0 and finite"),
    ({"temperature": "-1"}, PRIVATE, "Ignored temperature='-1' from the link: temperature must be > 0"),
    ({"temperature": "inf"}, PRIVATE, "Ignored temperature='inf' from the link: temperature must be > 0 and finite"),
    ({"temperature": "nan"}, PRIVATE, "Ignored temperature='nan' from the link: temperature must be > 0 and finite"),
    ({"temperature": "hot"}, PRIVATE, "Ignored temperature='hot' from the link: 'hot' is not a number."),
    ({"top_p": "7"}, PRIVATE, "Ignored top_p='7' from the link: top-p must be a number in (0, 1]"),
    ({"top_p": "0"}, PRIVATE, "Ignored top_p='0' from the link: top-p must be a number in (0, 1]"),
    ({"top_k": "-3"}, PRIVATE, "Ignored top_k='-3' from the link: top-k must be a whole number ≥ 0"),
    ({"top_k": "many"}, PRIVATE, "Ignored top_k='many' from the link: 'many' is not a whole number."),
    ({"seed": "abc"}, PRIVATE, "Ignored seed='abc' from the link: 'abc' is not a whole number."),
    ({"seed": "-1"}, PRIVATE, "Ignored seed='-1' from the link: seed must be a whole number from 0 to 2**64 - 1"),
    ({"seed": str(2**64)}, PRIVATE, "Ignored seed='18446744073709551616' from the link: seed must be a whole number"),
    ({"sampling": "beam"}, PRIVATE, "Ignored sampling='beam' from the link: sampling must be one of greedy, sample."),
    ({"dtype": "bogus"}, PRIVATE, "Ignored dtype='bogus' from the link: dtype must be one of float32, float64."),
    ({"dtype": "float16"}, HOSTED, "Ignored dtype='float16' from the link: dtype must be one of float32, float64."),
    ({"cache": "paged"}, PRIVATE, "Ignored cache='paged' from the link: cache must be one of dynamic, static."),
    ({"prompt": "  \n "}, PRIVATE, "Ignored prompt='  \\n ' from the link: the prompt is empty"),
    ({"model": "../../etc"}, PRIVATE, "Ignored model='../../etc' from the link: it is not one of this app's models "
                                      "(bundled, gpt2, distilgpt2, gpt2-medium, local directory…)"),
    ({"model": "<script>alert(1)</script>"}, PRIVATE, "Ignored model='<script>alert(1)</script>' from the link: it "
                                                      "is not one of this app's models"),
    ({"model": "gpt2-xl"}, HOSTED, "Ignored model='gpt2-xl' from the link: this shared server only offers: bundled, "
                                   "gpt2, distilgpt2. 'gpt2-xl' is not on its list."),
    ({"model": "gpt2-medium"}, HOSTED, "Ignored model='gpt2-medium' from the link: this shared server only offers"),
    ({"model": "/etc"}, HOSTED, "Ignored model='/etc' from the link: local model directories are disabled on this "
                                "server; it offers bundled, gpt2, distilgpt2."),
    ({"model": ui_state.LOCAL_CHOICE}, HOSTED, "Ignored model='local directory…' from the link: local model "
                                               "directories are disabled on this server"),
    ({"dir": "/etc"}, HOSTED, "Ignored dir='/etc' from the link: local model directories are disabled on this server."),
    ({"new": "100000"}, HOSTED, "Clamped new=100000 from the link to 128: this server allows at most 128 new tokens "
                                "per run."),
    ({"new": "999999"}, PRIVATE, "Clamped new=999999 from the link to 512: this server allows at most 512 new tokens"),
], ids=lambda v: None if isinstance(v, (dict, str)) else ("hosted" if v.hosted else "private"))
def test_each_refused_or_clamped_value_gets_its_line(params, policy, note):
    result = check({"layer": "3", **params}, policy)
    assert len(result.notes) == 1 and result.notes[0].startswith(note), result.notes
    (key,) = params
    if note.startswith("Clamped"):
        assert result.params[key] == str(policy.max_new_tokens)
    else:
        assert key not in result.params  # refused: out of the link, so a copied link no longer carries it
    assert result.params["layer"] == "3"  # a page's own values pass through untouched


def test_a_good_link_is_kept_as_it_is():
    params = {"model": "gpt2", "prompt": "ROMEO.", "new": "32", "sampling": "sample", "temperature": "0.7",
              "top_k": "40", "top_p": "0.9", "seed": "7", "dtype": "float64", "cache": "static", "step": "4"}
    assert check(params) == links.LinkCheck(params, ())
    assert check({**params, "model": "bundled", "new": "128"}, HOSTED).notes == ()


def test_several_bad_values_one_line_each():
    result = check({"model": "gpt2-xl", "new": "5000", "dtype": "int8", "dir": "/etc", "top_p": "7"}, HOSTED)
    assert [n.split(" from the link")[0] for n in result.notes] == [
        "Ignored model='gpt2-xl'", "Ignored dir='/etc'", "Ignored dtype='int8'", "Clamped new=5000",
        "Ignored top_p='7'"]
    assert result.params == {"new": "128"}
