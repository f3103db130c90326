"""The configuration reference, generated from the constructors the CLI wires: it cannot drift from the code.

Every YAML key is a constructor argument or a settings-dataclass field; its type and default come from the
signature, its description from the ``Args:`` section of the class docstring. The docs site renders this
(``docs/hooks/reference.py``), and ``python -m suneung_lit.reference`` prints it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Iterator
from typing import Any, get_args, get_origin


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: dotted name, type, default and description."""

    name: str
    type: str
    default: str
    description: str


def sections() -> list[tuple[str, type]]:
    """(config prefix, class) for every section a config holds, in the order a config file lists them."""
    from suneung_lit.backbone import BaseSettings, LoraSettings
    from suneung_lit.cli import AdapterExport
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.module import QLoRAMultipleChoice
    from suneung_lit.optimization import OptimizationSettings
    from suneung_lit.writer import PredictionCSVWriter

    return [
        ("model", QLoRAMultipleChoice),
        ("model.base", BaseSettings),
        ("model.lora", LoraSettings),
        ("model.optimization", OptimizationSettings),
        ("data", MultipleChoiceDataModule),
        ("prediction_writer", PredictionCSVWriter),
        ("adapter_export", AdapterExport),
    ]


def pretrain_sections() -> list[tuple[str, type]]:
    """The sections of a ``python -m suneung_lit pretrain`` config (the language-model stage)."""
    from suneung_lit.pretraining.datamodule import TextCorpusDataModule
    from suneung_lit.pretraining.module import CausalLMPretraining

    return [("model", CausalLMPretraining), ("data", TextCorpusDataModule)]


def documented_args(cls: type) -> dict[str, str]:
    """The ``Args:`` section of ``cls``'s docstring: argument name -> description (continuation lines joined)."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Args:\n(.*?)(?:\n\S|\Z)", doc, flags=re.S | re.M)
    described: dict[str, str] = {}
    name = None
    for line in (match.group(1) if match else "").splitlines():
        head = re.match(r"^    (\w+):\s*(.*)$", line)
        if head:
            name = head.group(1)
            described[name] = head.group(2)
        elif name and line.strip():
            described[name] += " " + line.strip()
    return described


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        return annotation.__name__
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return str(annotation).replace("typing.", "")


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty or value is dataclasses.MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def keys(prefix: str, cls: type) -> Iterator[Key]:
    """The keys of one section, in signature order."""
    described = documented_args(cls)
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        params = [(f.name, hints[f.name], f.default) for f in dataclasses.fields(cls)]
    else:
        hints = typing.get_type_hints(cls.__init__)
        signature = inspect.signature(cls.__init__)
        params = [
            (p.name, hints.get(p.name, p.annotation), p.default)
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    for name, annotation, default in params:
        yield Key(f"{prefix}.{name}", _type_name(annotation), _default(default), described.get(name, ""))


def undocumented() -> list[str]:
    """Keys whose class docstring does not describe them (the test suite keeps this empty)."""
    every = sections() + pretrain_sections()
    return [f"{cls.__name__}: {key.name}" for prefix, cls in every for key in keys(prefix, cls) if not key.description]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(chosen: list[tuple[str, type]] | None = None) -> str:
    """The reference as Markdown: one table per section (default: the fine-tune's), headed by the class that takes
    those keys."""
    parts = []
    for prefix, cls in sections() if chosen is None else chosen:
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        parts.append(f"### `{prefix}`\n\n`{cls.__module__}.{cls.__qualname__}`: {summary}\n")
        parts.append("| key | type | default | description |\n| --- | --- | --- | --- |")
        for key in keys(prefix, cls):
            row = [f"`{key.name}`", f"`{_cell(key.type)}`", f"`{_cell(key.default)}`", _cell(key.description)]
            parts.append("| " + " | ".join(row) + " |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown())
