"""The recipes table of docs/api.md lists exactly tl.RECIPES, so that the two cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mmdyn_sc.tl import RECIPES

API = Path(__file__).parents[1] / "docs" / "api.md"
START = "<!-- recipes-table:start"
END = "<!-- recipes-table:end -->"
CELL = re.compile(r"^`(?P<code>[^`]+)`$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _literal(cell: str) -> str:
    match = CELL.match(cell)
    assert match is not None, f"table cell {cell!r} is not one `code` span"
    return match["code"]


def recipes_table() -> dict[str, dict[str, object]]:
    """``{recipe: {option: value}}`` as the table in docs/api.md gives it."""
    text = API.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, "recipes table markers"
    rows = [line for line in text[text.index(START):text.index(END)].splitlines()
            if line.startswith("|")]
    header, rule, *body = rows
    assert set(rule.replace("|", "").strip()) <= set("-: "), "second row is the rule"
    first, *names = _cells(header)
    assert first == "option"
    recipes = [ast.literal_eval(_literal(name)) for name in names]
    table: dict[str, dict[str, object]] = {recipe: {} for recipe in recipes}
    for line in body:
        option, *values = _cells(line)
        option = _literal(option)
        assert len(values) == len(recipes), f"row {option!r} has {len(values)} values"
        for recipe, value in zip(recipes, values, strict=True):
            assert option not in table[recipe], f"option {option!r} listed twice"
            table[recipe][option] = ast.literal_eval(_literal(value))
    return table


def test_recipes_table_is_recipes():
    table = recipes_table()
    assert list(table) == list(RECIPES), "one column per recipe, in the order of RECIPES"
    for recipe, options in RECIPES.items():
        assert set(table[recipe]) == set(options), f"options of recipe {recipe!r}"
        for option, value in options.items():
            shown = table[recipe][option]
            assert shown == value and type(shown) is type(value), (
                f"RECIPES[{recipe!r}][{option!r}] is {value!r}; docs/api.md shows {shown!r}")
