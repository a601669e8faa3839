"""Typed options: defaults, camelCase parsing, bad values reported with defaults kept, docs in sync."""

from pathlib import Path

from server.config import ProtegeConfig, camel, option_names, parse_config, snake, to_wire

DOCS = Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md"


def test_defaults_round_trip() -> None:
    cfg, warnings = parse_config(to_wire(ProtegeConfig()))
    assert cfg == ProtegeConfig() and warnings == []


def test_camel_snake() -> None:
    assert camel("max_new_tokens") == "maxNewTokens"
    assert snake("maxNewTokens") == "max_new_tokens"


def test_valid_values_applied_nested() -> None:
    cfg, warnings = parse_config({"maxNewTokens": 10, "prefixShare": 1, "index": {"chromaUrl": "http://127.0.0.1:8000"},
                                  "screening": {"enabled": False}})
    assert warnings == []
    assert cfg.max_new_tokens == 10 and cfg.prefix_share == 1.0 and isinstance(cfg.prefix_share, float)
    assert cfg.index.chroma_url == "http://127.0.0.1:8000" and not cfg.screening.enabled


def test_bad_values_keep_defaults_with_one_warning_each() -> None:
    cfg, warnings = parse_config({"maxNewTokens": "x", "dtype": "float99", "healing": 1, "debounceMs": -1,
                                  "nope": 3, "index": [1], "screening": {"enabled": "yes"}})
    default = ProtegeConfig()
    assert (cfg.max_new_tokens, cfg.dtype, cfg.healing, cfg.debounce_ms) == (
        default.max_new_tokens, default.dtype, default.healing, default.debounce_ms)
    assert cfg.index == default.index and cfg.screening.enabled
    assert len(warnings) == 7
    assert any("'screening.enabled'" in w for w in warnings)


def test_not_an_object() -> None:
    cfg, warnings = parse_config("model=x")
    assert cfg == ProtegeConfig() and len(warnings) == 1


def test_docs_list_every_option() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [n for n in option_names() if f"`{n}`" not in text]
    assert not missing, f"docs/CONFIGURATION.md lacks {missing}"
