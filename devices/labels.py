"""Labels on devices and the selectors over them, as Kubernetes has them.

A label is a ``key=value`` pair on a device, one value per key.

- A **key** is an optional prefix and a name, ``[prefix/]name``. The name is 1 to 63 characters of ``[A-Za-z0-9]``,
  ``-``, ``_`` and ``.``, beginning and ending with a letter or digit (``plant``, ``role``, ``rack.row``). The
  prefix is a DNS subdomain of at most 253 characters: dot-separated parts of lowercase letters, digits and ``-``,
  each beginning and ending with a letter or digit (``example.com/owner``).
- A **value** is empty, or 1 to 63 characters with the name's alphabet and rule (``3``, ``boiler``, ``v1.2``).

A **selector** is requirements separated by commas, all of which a device must meet (an empty selector selects
every device):

======================  ==================================================================
``key=value``           the device has the label with this value (``key==value`` is the same)
``key!=value``          it has not: the key is absent or has another value
``key in (a,b)``        the key is present with one of these values
``key notin (a,b)``     the key is absent or has none of these values
``key``                 the key is present, with any value
``!key``                the key is absent
======================  ==================================================================

``str(selector)`` is its canonical form (requirements sorted, values sorted and deduplicated, ``==`` written
``=``, a one-value list written as ``=`` / ``!=``), so two selectors that read the same compare equal.
``Selector.q()`` is the same test as ``Selector.matches`` in SQL, one ``EXISTS`` over the label index per
requirement.
"""

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet

from .models import Device, DeviceLabel

LABEL_NAME_MAX = 63
LABEL_PREFIX_MAX = 253
LABEL_KEY_MAX = LABEL_PREFIX_MAX + 1 + LABEL_NAME_MAX
LABELS_PER_DEVICE_MAX = 64
SELECTOR_REQUIREMENTS_MAX = 64
SELECTOR_VALUES_MAX = 64

_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_PREFIX_PART = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# What the tokenizer reads as one word: a key, a value or an operator keyword.
_WORD = re.compile(r"[A-Za-z0-9_./-]+")
NAME_RULE = "1 to 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit"


def _name_problem(name: str, what: str) -> str | None:
    if not name:
        return f"{what} is empty"
    if len(name) > LABEL_NAME_MAX:
        return f"{what} is {len(name)} characters long; at most {LABEL_NAME_MAX} are allowed"
    if not _NAME.fullmatch(name):
        return f"{what} '{name}' is not {NAME_RULE}"
    return None


def label_key_problem(key: object) -> str | None:
    """Why ``key`` is not a label key, or None if it is one."""
    if not isinstance(key, str):
        return "a label key must be a string"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"the label key '{key}' has an empty prefix before '/'"
        if len(prefix) > LABEL_PREFIX_MAX:
            return f"the prefix of the label key '{key}' is longer than {LABEL_PREFIX_MAX} characters"
        if not all(_PREFIX_PART.fullmatch(part) for part in prefix.split(".")):
            return (
                f"the prefix '{prefix}' of the label key '{key}' is not a DNS subdomain (dot-separated parts of "
                "lowercase letters, digits and '-', each beginning and ending with a letter or digit)"
            )
    return _name_problem(name, f"the name of the label key '{key}'" if slash else "the label key")


def label_value_problem(value: object) -> str | None:
    """Why ``value`` is not a label value, or None if it is one (the empty string is one)."""
    if not isinstance(value, str):
        return "a label value must be a string"
    if value == "":
        return None
    return _name_problem(value, "the label value")


def labels_validate(labels: object, *, field: str = "labels") -> dict[str, str]:
    """A device's whole set of labels, checked: a JSON object of keys to values. Raises ``ValidationError``
    (keyed by ``field``) naming each bad key or value."""
    if not isinstance(labels, dict):
        raise ValidationError({field: ["Must be a JSON object of label keys to values."]})
    problems = [
        problem
        for key, value in labels.items()
        for problem in (label_key_problem(key), label_value_problem(value) if isinstance(key, str) else None)
        if problem
    ]
    if len(labels) > LABELS_PER_DEVICE_MAX:
        problems.append(f"a device has at most {LABELS_PER_DEVICE_MAX} labels; {len(labels)} were given")
    if problems:
        raise ValidationError({field: [problem[0].upper() + problem[1:] + "." for problem in problems]})
    return dict(labels)


class SelectorError(ValueError):
    """A selector that does not parse, with the problem and its position (0-based) in the text."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        where = f" (at position {position})" if position is not None else ""
        super().__init__(f"Invalid selector: {message}{where}.")
        self.position = position


class Operator(enum.Enum):
    # The value is the canonical spelling and the order requirements on one key are sorted in.
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = ""
    NOT_EXISTS = "!"


_ORDER = {op: index for index, op in enumerate(Operator)}


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()  # sorted, distinct; one for = and !=, at least two for in and notin

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.NOT_EXISTS:
            return f"!{self.key}"
        if self.operator in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {self.operator.value} ({','.join(self.values)})"
        return f"{self.key}{self.operator.value}{self.values[0]}"

    def sort_key(self) -> tuple:
        return (self.key, _ORDER[self.operator], self.values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is Operator.EXISTS:
            return present
        if self.operator is Operator.NOT_EXISTS:
            return not present
        hit = present and labels[self.key] in self.values
        return hit if self.operator in (Operator.EQUALS, Operator.IN) else not hit

    def q(self, device_field: str) -> Q:
        labels = DeviceLabel.objects.filter(device_id=OuterRef(device_field), key=self.key)
        if self.operator in (Operator.EQUALS, Operator.NOT_EQUALS):
            labels = labels.filter(value=self.values[0])
        elif self.operator in (Operator.IN, Operator.NOT_IN):
            labels = labels.filter(value__in=self.values)
        exists = Exists(labels)
        positive = self.operator in (Operator.EQUALS, Operator.IN, Operator.EXISTS)
        return Q(exists) if positive else ~Q(exists)


def _requirement(key: str, operator: Operator, values: Iterable[str] = ()) -> Requirement:
    distinct = tuple(sorted(set(values)))
    # One value in a list says no more than = or != does: write it so, so that the two compare equal.
    if operator is Operator.IN and len(distinct) == 1:
        operator = Operator.EQUALS
    elif operator is Operator.NOT_IN and len(distinct) == 1:
        operator = Operator.NOT_EQUALS
    return Requirement(key, operator, distinct)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, position: int | None = None) -> SelectorError:
        return SelectorError(message, position=self.pos if position is None else position)

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        self.skip_spaces()
        return self.text[self.pos : self.pos + 1]

    def at_end_of_requirement(self) -> bool:
        return self.peek() in ("", ",")

    def word(self) -> tuple[str, int]:
        self.skip_spaces()
        match = _WORD.match(self.text, self.pos)
        if match is None:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected a label key, found {found}")
        self.pos = match.end()
        return match.group(), match.start()

    def key(self) -> str:
        key, start = self.word()
        problem = label_key_problem(key)
        if problem:
            raise self.fail(problem, start)
        return key

    def value(self) -> str:
        """A value, possibly empty (``key=``, ``key in (a,)``)."""
        self.skip_spaces()
        start = self.pos
        match = _WORD.match(self.text, self.pos)
        value = match.group() if match else ""
        self.pos = match.end() if match else self.pos
        problem = label_value_problem(value)
        if problem:
            raise self.fail(problem, start)
        return value

    def values(self) -> list[str]:
        if self.peek() != "(":
            raise self.fail("expected '(' to open the list of values")
        opened = self.pos
        self.pos += 1
        values = [self.value()]
        while self.peek() == ",":
            self.pos += 1
            values.append(self.value())
        if self.peek() != ")":
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected ',' or ')' in the list of values opened at position {opened}, found {found}")
        self.pos += 1
        if values == [""] and self.text[opened + 1 : self.pos - 1].strip() == "":
            raise self.fail("the list of values is empty", opened)
        if len(values) > SELECTOR_VALUES_MAX:
            raise self.fail(f"a list holds at most {SELECTOR_VALUES_MAX} values", opened)
        return values

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.pos += 1
            if self.peek() == "=":
                raise self.fail("'!=' needs a label key before it", self.pos - 1)
            return _requirement(self.key(), Operator.NOT_EXISTS)
        key = self.key()
        if self.at_end_of_requirement():
            return _requirement(key, Operator.EXISTS)
        rest = self.text[self.pos :]
        for spelling, operator in (("==", Operator.EQUALS), ("!=", Operator.NOT_EQUALS), ("=", Operator.EQUALS)):
            if rest.startswith(spelling):
                self.pos += len(spelling)
                return _requirement(key, operator, [self.value()])
        start = self.pos
        word = _WORD.match(self.text, self.pos)
        if word is not None and word.group() in ("in", "notin"):
            self.pos = word.end()
            return _requirement(key, Operator.IN if word.group() == "in" else Operator.NOT_IN, self.values())
        raise self.fail(
            f"expected '=', '==', '!=', 'in', 'notin', ',' or the end after the label key '{key}', "
            f"found {self.text[start]!r}",
            start,
        )

    def parse(self) -> tuple[Requirement, ...]:
        if self.text.strip() == "":
            return ()
        requirements = [self.requirement()]
        while self.peek() == ",":
            self.pos += 1
            requirements.append(self.requirement())
        if self.pos < len(self.text):
            raise self.fail(f"expected ',' or the end, found {self.text[self.pos]!r}")
        if len(requirements) > SELECTOR_REQUIREMENTS_MAX:
            raise SelectorError(f"a selector holds at most {SELECTOR_REQUIREMENTS_MAX} requirements")
        return tuple(sorted(set(requirements), key=Requirement.sort_key))


@dataclass(frozen=True)
class Selector:
    """A parsed label selector; immutable, hashable, equal to any selector with the same canonical form."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Selector":
        if not isinstance(text, str):
            raise SelectorError("a selector must be a string")
        return cls(_Parser(text).parse())

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)

    def __bool__(self) -> bool:
        """False for the empty selector, which selects everything."""
        return bool(self.requirements)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def q(self, device_field: str = "pk") -> Q:
        """The selector as a filter: over ``Device`` by default, or over any model whose ``device_field`` holds
        a device's id (``DeviceSensor``: ``"device_id"``)."""
        condition = Q()
        for requirement in self.requirements:
            condition &= requirement.q(device_field)
        return condition


def labels_of(devices: Iterable[Device]) -> dict[int, dict[str, str]]:
    """Each device's labels by device id, every device given included (an empty dict when it has none), keys in
    order, in one query (a queryset is joined to the labels, a list of devices looks up their ids)."""
    if isinstance(devices, QuerySet):
        rows = devices.values_list("pk", "labels__key", "labels__value")
        result: dict[int, dict[str, str]] = {}
    else:
        ids = [device.pk for device in devices]
        result = {pk: {} for pk in ids}
        if not ids:
            return result
        rows = DeviceLabel.objects.filter(device_id__in=ids).values_list("device_id", "key", "value")
    for device_id, key, value in rows:
        labels = result.setdefault(device_id, {})
        if key is not None:
            labels[key] = value
    return {device_id: dict(sorted(labels.items())) for device_id, labels in result.items()}
