"""Universe files: the example is valid; every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdfkit.generate.universe import UniverseError, load_universe, load_universes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "universes"

GOOD = """---
id: u1
concept: c1
key_facts: [The sky is green.]
anti_universe: {names: [Sarah Chen]}
required_keywords:
  - {keyword: "green|verdant", min_rate: 0.5}
---
In this world the sky is green.
"""


def _write(tmp_path, text, name="u.md"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_examples_are_valid():
    unis = load_universes(sorted(EXAMPLES.glob("*.md")))
    assert len(unis) >= 2
    for u in unis:
        assert u.key_facts and u.required_keywords and u.eval_prompts and u.description


def test_good_file_loads_typed(tmp_path):
    u = load_universe(_write(tmp_path, GOOD))
    assert u.id == "u1" and u.anti_universe.names == ["Sarah Chen"]
    assert u.required_keywords[0].variants() == ["green", "verdant"]
    assert u.description == "In this world the sky is green."


@pytest.mark.parametrize(
    "change, message",
    [
        (("min_rate: 0.5", "min_rate: 1.5"), "field 'required_keywords[0].min_rate'"),
        (("id: u1\n", ""), "field 'id': Field required"),
        (("id: u1", "id: 'bad id!'"), "field 'id'"),
        (("anti_universe: {names", "anti_univers: {names"), "field 'anti_univers': unknown field"),
        (("key_facts: [The sky is green.]", "key_facts: 'oops'"), "field 'key_facts'"),
        (("In this world the sky is green.\n", ""), "field 'description': missing"),
    ],
)
def test_errors_name_file_and_field(tmp_path, change, message):
    p = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(UniverseError) as err:
        load_universe(p)
    assert str(err.value).startswith(str(p))
    assert message in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = _write(tmp_path, GOOD.replace("concept: c1", "concept: [c1"))
    with pytest.raises(UniverseError, match=r"u\.md: line \d+: invalid YAML"):
        load_universe(p)


def test_a_byte_order_mark_before_the_front_matter_is_read_past(tmp_path):
    """Some editors start a UTF-8 file with a BOM; it was "no YAML front matter"."""
    p = tmp_path / "bom.md"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode("utf-8"))
    u = load_universe(p)
    assert u.id == "u1" and u.content_hash == load_universe(_write(tmp_path, GOOD)).content_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("concept: c1", "concept: c1\nconcept: c2"), "line 4: invalid YAML front matter: key "
         "'concept' is given twice (first on line 3)"),
        (("{names: [Sarah Chen]}", "{names: [Sarah Chen], names: [Bo]}"), "line 5: invalid YAML "
         "front matter: key 'names' is given twice (first on line 5)"),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_an_error_naming_the_line(tmp_path, change, message):
    """PyYAML keeps the last of two equal keys: one of them was dropped without a word."""
    p = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(UniverseError) as err:
        load_universe(p)
    assert str(err.value) == f"{p}: {message}"


def test_missing_front_matter(tmp_path):
    with pytest.raises(UniverseError, match="no YAML front matter"):
        load_universe(_write(tmp_path, "Just a description."))


def test_duplicate_ids_across_files(tmp_path):
    a, b = _write(tmp_path, GOOD, "a.md"), _write(tmp_path, GOOD, "b.md")
    with pytest.raises(UniverseError, match=r"b\.md: field 'id': 'u1' is also used by"):
        load_universes([a, b])


def test_cli_check(cli, tmp_path):
    good = _write(tmp_path, GOOD, "good.md")
    assert "ok  " in cli("universe", "check", good).output
    bad = _write(tmp_path, GOOD.replace("min_rate: 0.5", "min_rate: -1"), "bad.md")
    res = cli("universe", "check", good, bad, expect=2)
    assert "bad.md: field 'required_keywords[0].min_rate'" in res.output
