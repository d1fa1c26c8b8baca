import pytest

from gptviz import DecodeError, DecodeSettings, ModelLoadError
from gptviz.hosting import HostingConfigError, Policy


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
    DecodeSettings(max_new_tokens=40).validate(policy.limits)
    with pytest.raises(DecodeError, match="at most 40 new tokens"):
        DecodeSettings(max_new_tokens=41).validate(policy.limits)
    with pytest.raises(ModelLoadError):
        policy.check_source("gpt2")


@pytest.mark.parametrize("env,message", [
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MAX_NEW_TOKENS": "lots"}, r"GPTVIZ_MAX_NEW_TOKENS='lots' is not a whole number"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MAX_NEW_TOKENS": "-5"}, r"GPTVIZ_MAX_NEW_TOKENS='-5' is not a whole number"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MAX_NEW_TOKENS": "0"}, r"GPTVIZ_MAX_NEW_TOKENS='0' is not a whole number"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MAX_NEW_TOKENS": "12.5"}, r"GPTVIZ_MAX_NEW_TOKENS='12.5' is not a whole"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MEMORY_BUDGET_MB": "-1"}, r"GPTVIZ_MEMORY_BUDGET_MB='-1' is not a number > 0"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MEMORY_BUDGET_MB": "0"}, r"GPTVIZ_MEMORY_BUDGET_MB='0' is not a number > 0"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MEMORY_BUDGET_MB": "nan"}, r"GPTVIZ_MEMORY_BUDGET_MB='nan' is not a number"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MEMORY_BUDGET_MB": "inf"}, r"GPTVIZ_MEMORY_BUDGET_MB='inf' is not a number"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MEMORY_BUDGET_MB": "128MB"}, r"GPTVIZ_MEMORY_BUDGET_MB='128MB' is not a number"),
    ({"GPTVIZ_HOSTED": "ture"}, r"GPTVIZ_HOSTED='ture' is neither on \(1, true, yes\) nor off"),
    ({"GPTVIZ_HOSTED": "2"}, r"GPTVIZ_HOSTED='2' is neither on"),
    ({"GPTVIZ_HOSTD": "1"}, r"GPTVIZ_HOSTD is not a gptviz setting: did you mean GPTVIZ_HOSTED\?"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_MAX_NEW_TOKEN": "40"}, r"GPTVIZ_MAX_NEW_TOKEN is not a gptviz setting: did you "
                                                          r"mean GPTVIZ_MAX_NEW_TOKENS\?"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_ALLOWED_MODELS": "bundled,gpt2-xxl"}, r"ALLOWED_MODELS=.* unknown: gpt2-xxl"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_ALLOWED_MODELS": "/etc"}, r"GPTVIZ_ALLOWED_MODELS='/etc' must list models from"),
    ({"GPTVIZ_HOSTED": "1", "GPTVIZ_ALLOWED_MODELS": " , "}, r"GPTVIZ_ALLOWED_MODELS=' , ' .* it lists none"),
], ids=["tokens-word", "tokens-negative", "tokens-zero", "tokens-fraction", "budget-negative", "budget-zero",
        "budget-nan", "budget-inf", "budget-unit", "hosted-typo", "hosted-2", "name-typo", "tokens-name-typo",
        "allowed-unknown", "allowed-path", "allowed-empty"])
def test_operator_typos_name_the_variable(env, message):
    with pytest.raises(HostingConfigError, match=message) as caught:
        Policy.from_env(env)
    assert "\n" not in str(caught.value)  # one line, for the page and the server log


def test_flags_and_numbers_operators_write():
    assert Policy.from_env({"GPTVIZ_HOSTED": " Yes "}).hosted
    assert not Policy.from_env({"GPTVIZ_HOSTED": "off"}).hosted
    policy = Policy.from_env({"GPTVIZ_HOSTED": "on", "GPTVIZ_MAX_NEW_TOKENS": " 40 ", "GPTVIZ_MEMORY_BUDGET_MB": "0.5"})
    assert (policy.max_new_tokens, policy.memory_budget) == (40, 2**19)
    assert Policy.from_env({"GPTVIZ_HOSTED": "0", "OTHER_GPTVIZ": "x", "PATH": "/bin"}) == Policy()


@pytest.mark.parametrize("env,message", [
    ({"GPTVIZ_HOSTING": "1"}, r"GPTVIZ_HOSTING is not a gptviz setting: did you mean GPTVIZ_HOSTED\?"),
    ({"GPTVIZ_ALLOWED": "bundled", "GPTVIZ_HOSTED": "1"}, r"GPTVIZ_ALLOWED is not .* mean GPTVIZ_ALLOWED_MODELS\?"),
    ({"GPTVIZ_ALLOW_TEST_MODELS": "1"}, r"GPTVIZ_ALLOW_TEST_MODELS is not a gptviz setting"),
    ({"GPTVIZ_X": "1"}, r"GPTVIZ_X is not a gptviz setting: the known ones are GPTVIZ_HOSTED, GPTVIZ_ALLOWED_MODELS, "
                        r"GPTVIZ_MAX_NEW_TOKENS, GPTVIZ_MEMORY_BUDGET_MB, GPTVIZ_REDIS_URL\. Rename or unset it"),
    ({"gptviz_hosted": "1"}, r"gptviz_hosted is not a gptviz setting: did you mean GPTVIZ_HOSTED\?"),
    ({"GPTVIZ_MAX_NEW_TOKENS": "8"}, r"GPTVIZ_MAX_NEW_TOKENS applies only in hosted mode: set GPTVIZ_HOSTED=1"),
    ({"GPTVIZ_HOSTED": "0", "GPTVIZ_ALLOWED_MODELS": "bundled", "GPTVIZ_MEMORY_BUDGET_MB": "9"},
     r"GPTVIZ_ALLOWED_MODELS, GPTVIZ_MEMORY_BUDGET_MB apply only in hosted mode: .* or unset them\."),
], ids=["hosting", "allowed", "old-test-switch", "unknown", "lower-case", "cap-unhosted", "caps-hosted-off"])
def test_unknown_names_and_caps_without_hosting_are_refused(env, message):
    """Each of these used to start the server unhosted (or ignore the cap) without a word."""
    with pytest.raises(HostingConfigError, match=message):
        Policy.from_env(env)
