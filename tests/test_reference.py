"""The configuration reference on the docs site is generated from the constructors, so it lists what they take."""

from __future__ import annotations

import inspect

from suneung_lit.reference import documented_args, keys, markdown, sections, undocumented


def test_every_config_key_is_described_in_its_class_docstring():
    assert undocumented() == []


def test_the_reference_lists_every_constructor_argument_with_its_default():
    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    text = markdown()
    for name in inspect.signature(MultipleChoiceDataModule.__init__).parameters:
        if name != "self":
            assert f"`data.{name}`" in text
    assert "| `model.lora.r` | `int` | `8` |" in text
    # A literal's "|" is escaped, so the table keeps its four columns.
    assert r"| `model.base.quantization` | `nf4 \| fp4 \| int8 \| dynamic_int8 \| none` | `nf4` |" in text


def test_a_docstring_argument_spanning_lines_is_read_whole():
    class Example:
        """Summary.

        Args:
            first: starts here
                and goes on here.
            second: short.

        Returns nothing.
        """

        def __init__(self, first: int = 1, second: str | None = None):
            pass

    assert documented_args(Example) == {"first": "starts here and goes on here.", "second": "short."}
    assert [(k.name, k.type, k.default) for k in keys("x", Example)] == [
        ("x.first", "int", "1"),
        ("x.second", "str | null", "null"),
    ]


def test_the_sections_are_the_ones_a_config_file_holds():
    prefixes = [prefix for prefix, _ in sections()]
    assert prefixes[:4] == ["model", "model.base", "model.lora", "model.optimization"]
    assert {"data", "prediction_writer", "adapter_export"} <= set(prefixes)
