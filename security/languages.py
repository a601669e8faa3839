"""Which LSP language ids the screen checks, and with what (no imports: the CLI's help text uses it)."""

JS_LANGUAGES = ("javascript", "typescript", "javascriptreact", "typescriptreact")
SCREENED = {
    "python": "Bandit checks in-process (fragment-aware) + detect-secrets",
    **{lang: "Protege JS/TS rules JS001-JS020 + detect-secrets" for lang in JS_LANGUAGES},
}
