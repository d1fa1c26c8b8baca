import pytest

from gptviz import DecodeError, ModelLoadError
from gptviz.hosting import Policy


def test_local_use_allows_everything():
    policy = Policy.from_env({})
    assert not policy.hosted and policy.allow_local
    policy.check_source("/some/dir")
    policy.check_source("gpt2-xl")


def test_hosted_mode_allow_lists_models_and_refuses_paths():
    policy = Policy.from_env({"GPTVIZ_HOSTED": "1"})
    assert policy.hosted and not policy.allow_local
    for ok in ("bundled", "gpt2", "openai-community/gpt2", "distilgpt2"):
        policy.check_source(ok)
    for bad in ("gpt2-xl", "/etc", "../assets/bundled-gpt2", "evil/gpt2", "bundled/../x"):
        with pytest.raises(ModelLoadError, match="only offers"):
            policy.check_source(bad)


def test_hosted_caps_are_configurable():
    policy = Policy.from_env({"GPTVIZ_HOSTED": "true", "GPTVIZ_ALLOWED_MODELS": "bundled",
                              "GPTVIZ_MAX_NEW_TOKENS": "40", "GPTVIZ_MEMORY_BUDGET_MB": "16"})
    assert policy.allowed_models == ("bundled",) and policy.memory_budget == 16 * 2**20
    policy.check_tokens(40)
    with pytest.raises(DecodeError, match="at most 40 new tokens"):
        policy.check_tokens(41)
    with pytest.raises(ModelLoadError):
        policy.check_source("gpt2")
