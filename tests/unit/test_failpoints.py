"""Fail points (erqpy.storage.failpoints): a misspelt one fails loudly, at the call site
or at start-up, instead of never firing and letting a crash test pass without a crash."""

import os
import re

import pytest

import erqpy
from erqpy.errors import ServerHalt
from erqpy.storage import failpoints

CALL = re.compile(r"""failpoint\(\s*["']([^"']+)["']""")


def test_a_failpoint_call_with_an_unknown_name_raises():
    with pytest.raises(ValueError, match="rewrite-befor-rename"):
        failpoints.failpoint("rewrite-befor-rename")


def test_a_known_failpoint_that_is_not_armed_returns(monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "segment-after-seal")
    failpoints.failpoint("rewrite-before-rename")  # another one is armed: no exit


def test_every_failpoint_call_in_the_source_names_a_listed_failpoint():
    root = os.path.dirname(erqpy.__file__)
    called = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "failpoints.py":
                with open(os.path.join(folder, name)) as f:
                    called.update(CALL.findall(f.read()))
    assert called == set(failpoints.FAILPOINTS)


def test_an_armed_name_that_is_no_failpoint_halts(monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "rewrite-befor-rename")
    with pytest.raises(ServerHalt, match="'rewrite-befor-rename' names no fail point"):
        failpoints.check_environment()

