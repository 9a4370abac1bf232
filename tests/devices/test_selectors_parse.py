"""Label keys, values and selectors as pure functions (``devices.labels``): parsing, the canonical form, matching
and the errors, with property tests. What the database makes of a selector is in ``test_labels.py``."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.labels import (
    Operator,
    Requirement,
    Selector,
    SelectorError,
    _requirement,
    label_key_problem,
    label_value_problem,
)

# -- keys and values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["plant", "a", "Role", "rack.row_3-b", "x" * 63, "example.com/owner", "k8s.io/app", "a-b.c/x", "0"],
)
def test_valid_keys(key):
    assert label_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "the label key is empty"),
        ("-plant", "is not 1 to 63 characters"),
        ("plant.", "is not 1 to 63 characters"),
        ("pla nt", "is not 1 to 63 characters"),
        ("x" * 64, "64 characters long; at most 63"),
        ("/plant", "has an empty prefix"),
        ("Example.com/owner", "is not a DNS subdomain"),
        ("a..b/owner", "is not a DNS subdomain"),
        ("a/b/c", "is not a DNS subdomain"),
        ("example.com/", "the name of the label key 'example.com/' is empty"),
        ("p" * 254 + "/x", "longer than 253"),
        (3, "must be a string"),
    ],
)
def test_invalid_keys_say_why(key, problem):
    assert problem in label_key_problem(key)


@pytest.mark.parametrize("value", ["", "3", "boiler", "v1.2_rc-1", "x" * 63])
def test_valid_values(value):
    assert label_value_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [("-3", "is not 1 to 63"), ("a b", "is not 1 to 63"), ("a/b", "is not 1 to 63"), ("x" * 64, "64 characters")],
)
def test_invalid_values_say_why(value, problem):
    assert problem in label_value_problem(value)


# -- parsing: each operator, its canonical spelling and its meaning ----------------------------------------------

LABELS = {"plant": "3", "role": "boiler", "empty": ""}


@pytest.mark.parametrize(
    ("text", "canonical", "matches"),
    [
        ("", "", True),
        ("   ", "", True),
        ("plant=3", "plant=3", True),
        ("plant==3", "plant=3", True),
        ("plant = 3", "plant=3", True),
        ("plant=4", "plant=4", False),
        ("plant!=4", "plant!=4", True),
        ("plant!=3", "plant!=3", False),
        ("missing!=3", "missing!=3", True),  # absent counts as "not 3", as in Kubernetes
        ("plant in (4, 3)", "plant in (3,4)", True),
        ("plant in(4,5)", "plant in (4,5)", False),
        ("missing in (1,2)", "missing in (1,2)", False),
        ("plant notin (4,5)", "plant notin (4,5)", True),
        ("plant notin (3,4)", "plant notin (3,4)", False),
        ("missing notin (3,4)", "missing notin (3,4)", True),
        ("plant in (3)", "plant=3", True),  # a one-value list says no more than =
        ("plant notin (3,3)", "plant!=3", False),
        ("plant", "plant", True),
        ("missing", "missing", False),
        ("!missing", "!missing", True),
        ("! plant", "!plant", False),
        ("empty=", "empty=", True),
        ("empty", "empty", True),
        ("plant=", "plant=", False),
        ("empty in (,x)", "empty in (,x)", True),
        ("role=boiler,plant=3", "plant=3,role=boiler", True),
        ("role=boiler, plant=4", "plant=4,role=boiler", False),
        ("plant=3,plant=3", "plant=3", True),
        ("plant,plant in (3,4),!x,plant!=5", "plant!=5,plant in (3,4),plant,!x", True),
        ("example.com/owner=bob", "example.com/owner=bob", False),
    ],
)
def test_each_operator(text, canonical, matches):
    selector = Selector.parse(text)

    assert str(selector) == canonical
    assert Selector.parse(canonical) == selector
    assert selector.matches(LABELS) is matches


def test_the_empty_selector_is_falsy_and_selects_everything():
    assert not Selector.parse("")
    assert Selector.parse("a")
    assert Selector.parse("").matches({})


def test_selectors_are_hashable_and_equal_by_meaning():
    assert {Selector.parse("b=1, a in (2)"), Selector.parse("a=2,b==1")} == {Selector.parse("a=2,b=1")}


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("plant=3,", "expected a label key, found the end", 8),
        (",plant=3", "expected a label key, found ','", 0),
        ("=3", "expected a label key, found '='", 0),
        ("plant=3,,role=x", "expected a label key, found ','", 8),
        (
            "plant 3",
            "expected '=', '==', '!=', 'in', 'notin', ',' or the end after the label key 'plant', found '3'",
            6,
        ),
        ("plant=3 role=x", "expected ',' or the end, found 'r'", 8),
        ("plant in 3", "expected '(' to open the list of values", 9),
        ("plant in (3", "expected ',' or ')' in the list of values opened at position 9, found the end", 11),
        ("plant in (3;4)", "found ';'", 11),
        ("plant in ()", "the list of values is empty", 9),
        ("plant in ( )", "the list of values is empty", 9),
        ("-plant=3", "the label key '-plant' is not 1 to 63 characters", 0),
        ("plant=-3", "the label value '-3' is not 1 to 63 characters", 6),
        ("plant=3,role=bo iler", "expected ',' or the end, found 'i'", 16),
        ("!=3", "'!=' needs a label key before it", 0),
        ("!", "expected a label key, found the end", 1),
        ("plant=café", "expected ',' or the end, found 'é'", 9),
        ("plant in (" + ",".join(map(str, range(65))) + ")", "at most 64 values", 9),
        (",".join(f"k{n}" for n in range(65)), "at most 64 requirements", None),
    ],
)
def test_errors_name_the_problem_and_where(text, message, position):
    with pytest.raises(SelectorError) as raised:
        Selector.parse(text)

    assert message in str(raised.value)
    assert raised.value.position == position
    if position is not None:
        assert f"(at position {position})" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_selector_must_be_text():
    with pytest.raises(SelectorError, match="must be a string"):
        Selector.parse(None)  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------------------------------------

# Few keys and values, so that generated selectors and label sets meet often.
keys = st.sampled_from(["plant", "role", "a", "example.com/owner", "x_1.y-2"])
values = st.sampled_from(["", "3", "4", "boiler", "B.1"])
label_sets = st.dictionaries(keys, values, max_size=5)


@st.composite
def requirements(draw) -> tuple[Requirement, str]:
    """A requirement, with one of the ways to write it (spacing, ``==``, order and repeats in lists)."""
    key = draw(keys)
    operator = draw(st.sampled_from(list(Operator)))
    space = draw(st.sampled_from(["", " ", "  "]))
    if operator is Operator.EXISTS:
        return _requirement(key, operator), f"{space}{key}{space}"
    if operator is Operator.NOT_EXISTS:
        return _requirement(key, operator), f"!{space}{key}"
    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        value = draw(values)
        spelling = draw(st.sampled_from(["=", "=="])) if operator is Operator.EQUALS else "!="
        return _requirement(key, operator, [value]), f"{key}{space}{spelling}{space}{value}"
    listed = draw(st.lists(values, min_size=1, max_size=4).filter(lambda vs: vs != [""]))
    return _requirement(key, operator, listed), f"{key} {operator.value}{space}({f',{space}'.join(listed)})"


@st.composite
def selectors(draw) -> tuple[Selector, str]:
    drawn = draw(st.lists(requirements(), max_size=6))
    canonical = Selector(tuple(sorted({requirement for requirement, _ in drawn}, key=Requirement.sort_key)))
    return canonical, ",".join(text for _, text in drawn)


@given(selectors())
def test_parsing_any_spelling_gives_the_canonical_selector(drawn):
    selector, text = drawn

    assert Selector.parse(text) == selector


@given(selectors())
def test_the_canonical_form_parses_back_to_the_same_selector(drawn):
    selector, _ = drawn

    assert Selector.parse(str(selector)) == selector
    assert str(Selector.parse(str(selector))) == str(selector)


@given(selectors(), label_sets)
def test_a_selector_matches_when_each_requirement_does(drawn, labels):
    selector, _ = drawn

    assert selector.matches(labels) == all(Selector((r,)).matches(labels) for r in selector.requirements)


@given(keys, values, label_sets)
def test_each_operator_is_the_negation_of_its_opposite(key, value, labels):
    for positive, negative in (("{k}={v}", "{k}!={v}"), ("{k} in (x,{v})", "{k} notin (x,{v})"), ("{k}", "!{k}")):
        assert Selector.parse(positive.format(k=key, v=value)).matches(labels) != Selector.parse(
            negative.format(k=key, v=value)
        ).matches(labels)


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_a_selector_error(text):
    try:
        selector = Selector.parse(text)
    except SelectorError as error:
        assert str(error).startswith("Invalid selector: ")
    else:
        assert Selector.parse(str(selector)) == selector
