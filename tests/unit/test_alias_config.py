"""The ``[aliases.<name>]`` tables: every refusal is a ConfigError at the file:line of
the key at fault; a good table gives ``Settings.aliases``."""

import pytest

from erqpy.errors import ConfigError
from erqpy.server.config import build_settings

pytestmark = pytest.mark.unit

# (file text, line named, part of the reason)
BAD_ALIASES = {
    "unknown-key": ('[aliases.a]\ndestinations = ["x"]\ndestination = ["y"]\n', 3,
                    "unknown setting 'destination' in [aliases.a]"),
    "empty-list": ("[aliases.a]\ndestinations = []\n", 2, "[aliases.a] destinations must be a non-empty list"),
    "missing-list": ("\n[aliases.a]\n", 2, "[aliases.a] destinations must be a non-empty list"),
    "not-a-list": ('[aliases.a]\ndestinations = "x"\n', 2, "must be a non-empty list"),
    "not-a-name": ('[aliases.a]\ndestinations = ["x", 3]\n', 2, "must be queue names, not 3"),
    "bad-name": ('[aliases.a]\ndestinations = ["x y"]\n', 2, "destination 'x y' is not a queue name"),
    "itself": ('[aliases.a]\ndestinations = ["b", "a"]\n', 2, "[aliases.a] names itself"),
    "twice": ('[aliases.a]\ndestinations = ["b", "b"]\n', 2, "names a destination twice"),
    "another-alias": ('[aliases.a]\ndestinations = ["q"]\n\n[aliases.b]\ndestinations = ["a", "r"]\n', 5,
                      "[aliases.b] destination 'a' is an alias"),
    "also-a-queue": ('[queues.jobs]\nmax_items = 5\n\n[aliases.jobs]\ndestinations = ["x"]\n', 1,
                     "'jobs' is both an alias and a [queues.jobs] table"),
    "not-a-table": ("[aliases]\na = 3\n", 2, "[aliases.a] must be a table"),
}


@pytest.mark.parametrize("case", sorted(BAD_ALIASES))
def test_a_bad_alias_table_is_refused_at_its_line(tmp_path, case):
    text, line, reason = BAD_ALIASES[case]
    path = tmp_path / "erqpy.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        build_settings(str(path))

    assert f"{path}:{line}" == caught.value.where
    assert reason in caught.value.reason, caught.value.reason


def test_a_good_alias_table_gives_its_destinations_in_order(tmp_path):
    path = tmp_path / "erqpy.toml"
    path.write_text('[aliases.signups]\ndestinations = ["mail", "audit", "m+child"]\n')

    settings = build_settings(str(path))

    assert {"signups": ("mail", "audit", "m+child")} == settings.aliases


def test_no_alias_table_means_no_aliases(tmp_path):
    assert {} == build_settings().aliases
