"""A small rule set for insecure JavaScript/TypeScript patterns (Bandit reads only Python).

Each rule is a regular expression over the lines a suggestion touches, with comments blanked out
(strings are kept: several rules read them). Rules are deliberately few and precise: code
evaluation, HTML injection, shell commands built from data, weak hashes and ciphers, disabled TLS
verification, SQL built by concatenation, insecure cookies, ``Math.random`` and JWT ``none``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_COMMENT_OR_STRING = re.compile(
    r"""//[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^'\\\n]|\\.)*'?|"(?:[^"\\\n]|\\.)*"?|`(?:[^`\\]|\\.)*`?""",
    re.S,
)


def blank_comments(text: str) -> str:
    """``text`` with every comment replaced by spaces (newlines kept), so offsets are unchanged."""

    def repl(m: re.Match[str]) -> str:
        s = m.group()
        if s.startswith(("//", "/*")):
            return re.sub(r"[^\n]", " ", s)
        return s

    return _COMMENT_OR_STRING.sub(repl, text)


@dataclass(frozen=True)
class JsRule:
    """One pattern: its id, ranks, CWE and one-line message; ``refine`` may reject or re-rank a match."""

    test_id: str
    pattern: re.Pattern[str]
    severity: str
    confidence: str
    cwe: int
    message: str
    # (match, scanned code, the rest of the document) -> ranks, or None to drop the match.
    refine: Callable[[re.Match[str], str, str], tuple[str, str] | None] | None = None


def _exec_rank(m: re.Match[str], text: str, context: str = "") -> tuple[str, str] | None:
    """A shell command from a literal is low risk; one built from data is command injection."""
    if m.group("obj") is None and "child_process" not in text and "child_process" not in context:
        return None  # `exec(` here is not child_process (RegExp.exec, a local helper)
    arg = text[m.end():m.end() + 200].lstrip()
    literal = re.match(r"""(['"])[^'"\n]*\1\s*[,)]""", arg) or re.match(r"`[^`$]*`\s*[,)]", arg)
    return ("LOW", "HIGH") if literal else ("HIGH", "HIGH")


def _needs_spawn(m: re.Match[str], text: str, context: str = "") -> tuple[str, str] | None:
    pattern = r"\b(?:spawn|spawnSync|execFile|execFileSync|fork)\s*\("
    return ("HIGH", "MEDIUM") if re.search(pattern, text) or re.search(pattern, context) else None


_SQL = r"(?:SELECT\s[^;]*?\sFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM)\b"

RULES: tuple[JsRule, ...] = (
    JsRule("JS001", re.compile(r"(?<![\w$.])eval\s*\("), "MEDIUM", "HIGH", 95,
           "Use of eval() runs arbitrary code; parse data with JSON.parse or dispatch explicitly."),
    JsRule("JS002", re.compile(r"\bnew\s+Function\s*\("), "MEDIUM", "HIGH", 95,
           "new Function() compiles a string into code, like eval()."),
    JsRule("JS003", re.compile(r"\b(?:setTimeout|setInterval)\s*\(\s*['\"`]"), "MEDIUM", "MEDIUM", 95,
           "A string passed to setTimeout/setInterval is evaluated as code; pass a function."),
    JsRule("JS004", re.compile(r"\.(?:innerHTML|outerHTML)\s*\+?=(?!=)(?!\s*(['\"])[^'\"\n]*\1\s*;?\s*$)", re.M),
           "MEDIUM", "MEDIUM", 79, "Assigning built HTML to innerHTML/outerHTML allows cross-site scripting."),
    JsRule("JS005", re.compile(r"\b(?:document\.write(?:ln)?|\.insertAdjacentHTML)\s*\("), "MEDIUM", "MEDIUM", 79,
           "document.write/insertAdjacentHTML insert raw HTML (cross-site scripting)."),
    JsRule("JS006", re.compile(r"\bdangerouslySetInnerHTML\s*[=:]\s*\{?\s*\{\s*__html\s*:"), "MEDIUM", "MEDIUM", 79,
           "dangerouslySetInnerHTML renders raw HTML (cross-site scripting) unless it is sanitized."),
    JsRule("JS007", re.compile(r"(?:\b(?P<obj>child_process|childProcess|cp)\.|(?<![\w$.]))exec(?:Sync)?\s*\("),
           "HIGH", "HIGH", 78, "child_process.exec runs its command through a shell; use execFile/spawn with an argument array.",
           _exec_rank),
    JsRule("JS008", re.compile(r"\bshell\s*:\s*true\b"), "HIGH", "MEDIUM", 78,
           "spawn/execFile with shell: true runs the command through a shell (command injection).", _needs_spawn),
    JsRule("JS009", re.compile(r"\bcreateHash\s*\(\s*['\"`](?:md4|md5|sha1|sha-1)['\"`]", re.I), "MEDIUM", "HIGH", 327,
           "MD5/SHA-1 are broken for security; use SHA-256 or better (or a password hash for passwords)."),
    JsRule("JS010", re.compile(r"\bcreateCipher(?:iv)?\s*\(\s*['\"`](?:des|des-ede3?|rc2|rc4|bf|blowfish|[\w-]*-ecb)\b",
                               re.I), "HIGH", "HIGH", 327, "A broken or ECB-mode cipher; use aes-256-gcm with a random IV."),
    JsRule("JS011", re.compile(r"\bcreateCipher\s*\("), "MEDIUM", "HIGH", 327,
           "crypto.createCipher derives keys without salt or IV (deprecated); use createCipheriv."),
    JsRule("JS012", re.compile(r"\brejectUnauthorized\s*:\s*false\b|\bstrictSSL\s*:\s*false\b|"
                               r"NODE_TLS_REJECT_UNAUTHORIZED['\"\]]?\s*=\s*['\"]?0"), "HIGH", "HIGH", 295,
           "TLS certificate verification is disabled."),
    JsRule("JS013", re.compile(r"(['\"])\s*" + _SQL + r"(?:(?!\1)[^\n])*\1\s*\+|`\s*" + _SQL + r"[^`]*\$\{", re.I),
           "MEDIUM", "MEDIUM", 89, "SQL built by string concatenation or interpolation; use a parameterized query."),
    JsRule("JS014", re.compile(r"\bvm\.(?:runInNewContext|runInThisContext|runInContext|compileFunction)\s*\(|"
                               r"\bnew\s+vm\.Script\s*\("), "MEDIUM", "HIGH", 95,
           "The vm module is not a security sandbox; it runs arbitrary code."),
    JsRule("JS015", re.compile(r"\.unserialize\s*\("), "HIGH", "MEDIUM", 502,
           "Deserializing untrusted data with unserialize() can run code; use JSON.parse."),
    JsRule("JS016", re.compile(r"\bMath\.random\s*\("), "LOW", "HIGH", 330,
           "Math.random is not cryptographically secure; use crypto.randomBytes/getRandomValues for secrets."),
    JsRule("JS017", re.compile(r"\b(?:httpOnly|secure)\s*:\s*false\b"), "MEDIUM", "MEDIUM", 614,
           "Cookie without Secure/HttpOnly flags can leak over HTTP or to scripts."),
    JsRule("JS018", re.compile(r"\balgorithms\s*:\s*\[[^\]]*['\"]none['\"]", re.I), "HIGH", "HIGH", 347,
           "JWT verification accepting the 'none' algorithm accepts unsigned tokens."),
    JsRule("JS019", re.compile(r"\.postMessage\s*\([^;\n]*,\s*['\"]\*['\"]\s*\)"), "MEDIUM", "MEDIUM", 345,
           "postMessage with target origin '*' sends data to any window."),
    JsRule("JS020", re.compile(r"\.bypassSecurityTrust(?:Html|Script|Style|Url|ResourceUrl)\s*\("), "MEDIUM", "MEDIUM", 79,
           "Bypassing Angular's sanitizer allows cross-site scripting."),
)


@dataclass
class JsHit:
    """One rule match as character offsets into the scanned text."""

    rule: JsRule
    start: int
    end: int
    severity: str
    confidence: str


def scan(text: str, context: str = "") -> list[JsHit]:
    """Every rule match in ``text`` (comments ignored); ``context`` (the rest of the document: its
    ``require``/``import`` lines) tells rules like JS007 what a name refers to."""
    code = blank_comments(text)
    hits = []
    for rule in RULES:
        for m in rule.pattern.finditer(code):
            ranks: tuple[str, str] | None = (rule.severity, rule.confidence)
            if rule.refine is not None:
                ranks = rule.refine(m, code, context)
            if ranks is None:
                continue
            hits.append(JsHit(rule, m.start(), m.end(), ranks[0], ranks[1]))
    # createCipher('des') is JS010; do not report it twice as the generic JS011 as well.
    strong = {(h.start, h.rule.test_id) for h in hits if h.rule.test_id == "JS010"}
    return [h for h in hits if not (h.rule.test_id == "JS011" and (h.start, "JS010") in strong)]
