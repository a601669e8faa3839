"""Typed server options: dataclasses with a default for every field, camelCase on the wire.

Options arrive as ``initializationOptions`` and again from ``workspace/configuration`` (section
``protege``). A bad value never stops the server: it is reported once and the default is used.
"""

from __future__ import annotations

import dataclasses
import re
import types as pytypes
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin


@dataclass
class ScreeningOptions:
    """How suggestions are screened (see security/)."""

    enabled: bool = True
    # Passed to ``security.policy.Policy.from_dict``; empty means the policy's defaults.
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexOptions:
    """Repository index used for completion context, search and explanations."""

    enabled: bool = True
    chroma_url: str | None = None
    cache_dir: str | None = None
    # Index the workspace automatically after initialization.
    auto_index: bool = False
    # Retrieved-context budget per completion, in characters (the token budget still applies).
    max_context_chars: int = 2000
    # Retrieved snippets in completion prompts: "auto" uses them unless the model's card.json says it was
    # trained without them (the starter models: their prompts never had context blocks, and on held-out
    # files such blocks cost the mixture ~0.01 EM; bench/bench_memory.py --context-chars 0); "on"/"off" force it.
    prompt_context: Literal["auto", "on", "off"] = "auto"
    # Tokens of each chunk the embedding model reads: 32 indexes ~4x faster than 128 (see indexing/README.md);
    # changing it rebuilds the index. None: what the existing index was built with, else 32.
    embed_max_tokens: int | None = None


@dataclass
class SearchOptions:
    """Line search: when the first token is uncertain, the first line is chosen among greedy continuations of
    the most likely first tokens by its whole log-probability (fitted on held-out files of httpx, typer and
    tenacity, never on the benchmark's repositories: bench/bench_memory.py)."""

    # First tokens tried, the greedy one included; 1 turns the search off (plain greedy decoding).
    candidates: int = 3
    # Search only when the best first token's probability is below this.
    below: float = 0.9
    # Another first token wins when its line is this many nats more likely than the greedy line.
    margin: float = 1.0


@dataclass
class MemoryOptions:
    """Repository memory: an ∞-gram over the workspace's tokens mixed into every completion (indexing/memory.py)."""

    enabled: bool = True
    # The open document (text before and after the cursor's line) counts as memory too.
    buffer: bool = True
    # Overrides the model's memory_mix.json: {"sparse": [9 weights], "dense": [9 weights]} per match-length
    # bucket (1, 2, 3, 4-5, 6-7, 8-11, 12-15, 16-23, 24+ tokens). Empty: the model's table.
    weights: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProtegeConfig:
    """Everything a client can set. Field names are snake_case here and camelCase on the wire."""

    model: str | None = None  # None: the shipped starter student
    family: str = "auto"  # FIM template family; "auto" detects it from the vocabulary
    fim_layout: Literal["auto", "psm", "spm"] = "auto"  # "auto": spm when the model card says it was trained on it
    dtype: Literal["float32", "bfloat16"] = "float32"
    quantize: Literal["none", "int8"] = "none"
    decoder: Literal["auto", "transformers"] = "auto"  # "auto": lean decoder for Llama-family models
    draft_tokens: int = 8  # prompt-lookup speculative decoding: draft length (0 turns it off)
    allow_online: bool = False  # allow a hub id for `model` (never by default)
    threads: int = 0  # torch threads; 0 keeps torch's default
    max_new_tokens: int = 48
    max_new_tokens_line: int = 24
    context_tokens: int = 1024  # total prompt budget
    prefix_share: float = 0.3  # share of the budget reserved for the prefix
    suffix_share: float = 0.2  # cap on the suffix's share
    debounce_ms: int = 25
    cache_size: int = 256
    healing: bool = True
    multiline: bool = True
    screening: ScreeningOptions = field(default_factory=ScreeningOptions)
    index: IndexOptions = field(default_factory=IndexOptions)
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    search: SearchOptions = field(default_factory=SearchOptions)


_RANGES: dict[str, tuple[float, float]] = {
    "threads": (0, 256),
    "draft_tokens": (0, 64),
    "max_new_tokens": (1, 1024),
    "max_new_tokens_line": (1, 256),
    "context_tokens": (64, 131072),
    "prefix_share": (0.0, 1.0),
    "suffix_share": (0.0, 1.0),
    "debounce_ms": (0, 5000),
    "cache_size": (0, 100000),
    "max_context_chars": (0, 200000),
    "embed_max_tokens": (8, 512),
    "candidates": (1, 5),
    "below": (0.0, 1.0),
    "margin": (0.0, 100.0),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin in (typing.Union, pytypes.UnionType):
        return any(_check(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return isinstance(value, tp)


def _parse_into(cls: type, raw: Any, path: str, warnings: list[str]) -> Any:
    obj = cls()
    if raw is None:
        return obj
    if not isinstance(raw, dict):
        warnings.append(f"'{path or 'options'}' must be an object, got {type(raw).__name__}; using defaults")
        return obj
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        name = snake(key) if isinstance(key, str) else str(key)
        where = f"{path}.{camel(name)}" if path else camel(name)
        if name not in known:
            warnings.append(f"unknown option '{where}' ignored")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            setattr(obj, name, _parse_into(tp, value, where, warnings))  # type: ignore[arg-type]
            continue
        if not _check(value, tp):
            default = getattr(obj, name)
            warnings.append(f"option '{where}' has invalid value {value!r}; using default {default!r}")
            continue
        if name in _RANGES and isinstance(value, int | float):
            lo, hi = _RANGES[name]
            if not lo <= value <= hi:
                default = getattr(obj, name)
                warnings.append(f"option '{where}'={value!r} is outside [{lo:g}, {hi:g}]; using default {default!r}")
                continue
        if tp is float and isinstance(value, int):
            value = float(value)
        setattr(obj, name, value)
    return obj


def parse_config(raw: Any) -> tuple[ProtegeConfig, list[str]]:
    """Parse wire options into a ``ProtegeConfig``; returns the config and human-readable warnings."""
    warnings: list[str] = []
    cfg = _parse_into(ProtegeConfig, raw, "", warnings)
    return cfg, warnings


def merge_raw(base: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """Deep-merge two wire dicts (``override`` wins), so workspace settings refine init options."""
    out: dict[str, Any] = dict(base or {})
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_raw(out[k], v)
        else:
            out[k] = v
    return out


def to_wire(cfg: Any) -> dict[str, Any]:
    """The camelCase dict form of a config dataclass (for status and docs)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[camel(f.name)] = to_wire(v) if dataclasses.is_dataclass(v) else v
    return out


def option_names(cls: type = ProtegeConfig, prefix: str = "") -> list[str]:
    """Every option's dotted camelCase name, for the docs check."""
    names: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + camel(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            names.extend(option_names(hints[f.name], name + "."))
        else:
            names.append(name)
    return names
