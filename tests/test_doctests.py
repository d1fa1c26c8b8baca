"""Every docstring example in gptviz/ runs, and says what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import gptviz

MODULES = sorted(m.name for m in pkgutil.walk_packages(gptviz.__path__, "gptviz.")
                 if not m.name.endswith("__main__"))  # importing __main__ would run the command line


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0


def test_there_are_examples_to_run():
    attempted = sum(doctest.testmod(importlib.import_module(n), report=False).attempted for n in MODULES)
    assert attempted >= 8
