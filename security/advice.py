"""What a finding means and the safe idiom to use instead, for diagnostics and code actions.

Keyed by test id (Bandit's B-codes, ``SECRET``, our ``JS0xx`` rules). Every Bandit test gets at
least its own name and CWE from Bandit's plugin registry; the common ones have a hand-written
explanation and a safe idiom a code action can offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Advice:
    """A one-line title, a short explanation, the safe idiom (if there is one) and the CWE."""

    title: str
    explanation: str
    safe_idiom: str | None
    cwe: int | None


_A = Advice
_WRITTEN: dict[str, Advice] = {
    "B101": _A("assert used", "assert statements are removed under `python -O`; do not use them for checks that must hold.",
               "if not condition:\n    raise ValueError(\"...\")", 703),
    "B102": _A("exec used", "exec runs arbitrary code built from strings.",
               "# dispatch explicitly instead of exec:\nhandlers = {\"name\": function}\nhandlers[name]()", 78),
    "B103": _A("permissive file permissions", "World-writable or executable permissions let other users change the file.",
               "os.chmod(path, 0o600)", 732),
    "B104": _A("binding to all interfaces", "Binding to 0.0.0.0 exposes the service on every network interface.",
               "sock.bind((\"127.0.0.1\", port))", 605),
    "B105": _A("hard-coded password", "A password in source code leaks with the code.",
               "password = os.environ[\"APP_PASSWORD\"]", 259),
    "B106": _A("hard-coded password argument", "A password passed as a literal leaks with the code.",
               "connect(password=os.environ[\"APP_PASSWORD\"])", 259),
    "B107": _A("hard-coded password default", "A default password in a signature leaks with the code.",
               "def connect(password: str | None = None): ...", 259),
    "B108": _A("hard-coded temporary path", "Fixed paths under /tmp can be pre-created or raced by another user.",
               "with tempfile.NamedTemporaryFile() as handle:\n    ...", 377),
    "B110": _A("try/except/pass", "Silently swallowing every exception hides failures, including security ones.",
               "except SpecificError:\n    logger.exception(\"...\")", 703),
    "B112": _A("try/except/continue", "Silently skipping on every exception hides failures.",
               "except SpecificError:\n    logger.warning(\"...\")\n    continue", 703),
    "B113": _A("request without timeout", "A request without a timeout can hang forever.",
               "requests.get(url, timeout=10)", 400),
    "B201": _A("Flask debug mode", "The Werkzeug debugger allows arbitrary code execution.", "app.run(debug=False)", 94),
    "B202": _A("tarfile.extractall without filter", "Archive members can write outside the target directory.",
               "tar.extractall(path, filter=\"data\")", 22),
    "B301": _A("pickle deserialization", "Unpickling untrusted data can run arbitrary code.",
               "data = json.loads(payload)", 502),
    "B303": _A("insecure hash (MD5/SHA1)", "MD5 and SHA-1 are broken for security uses.",
               "hashlib.sha256(data).hexdigest()", 327),
    "B304": _A("insecure cipher", "This cipher or mode is broken.",
               "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\nAESGCM(key).encrypt(nonce, data, None)", 327),
    "B305": _A("insecure cipher mode", "ECB mode leaks patterns of the plaintext.",
               "Cipher(algorithms.AES(key), modes.GCM(iv))", 327),
    "B306": _A("tempfile.mktemp", "mktemp returns a name another process can create first.",
               "fd, path = tempfile.mkstemp()", 377),
    "B307": _A("eval used", "eval runs arbitrary code; for data use ast.literal_eval or json.",
               "value = ast.literal_eval(text)", 78),
    "B308": _A("mark_safe", "mark_safe disables Django's auto-escaping (cross-site scripting).",
               "format_html(\"<b>{}</b>\", value)", 80),
    "B310": _A("urlopen with any scheme", "urlopen accepts file:// and custom schemes.",
               "if not url.startswith((\"https://\", \"http://\")):\n    raise ValueError(url)", 22),
    "B311": _A("non-cryptographic random", "The random module is predictable; use secrets for tokens and keys.",
               "token = secrets.token_urlsafe(32)", 330),
    "B324": _A("insecure hash function", "MD4/MD5/SHA-1 are broken for security uses.",
               "hashlib.sha256(data)  # or hashlib.md5(data, usedforsecurity=False) for checksums", 327),
    "B501": _A("TLS verification disabled", "verify=False accepts any certificate (man-in-the-middle).",
               "requests.get(url, timeout=10)  # verify defaults to True", 295),
    "B502": _A("insecure SSL/TLS version", "SSLv2/SSLv3/TLSv1.0/1.1 are broken.",
               "context = ssl.create_default_context()", 327),
    "B506": _A("yaml.load", "yaml.load with an unsafe loader can construct arbitrary objects.",
               "data = yaml.safe_load(stream)", 20),
    "B507": _A("SSH host key not verified", "AutoAddPolicy/WarningPolicy accept any host key.",
               "client.set_missing_host_key_policy(paramiko.RejectPolicy())", 295),
    "B602": _A("subprocess with shell=True", "A shell command built from data allows command injection.",
               "subprocess.run([\"ls\", \"-l\", path], check=True)", 78),
    "B603": _A("subprocess without shell", "Check that the executable and arguments cannot be controlled by an attacker.",
               "subprocess.run([shutil.which(\"ls\"), \"-l\", path], check=True)", 78),
    "B604": _A("shell=True in a function call", "A call with shell=True may run a shell command built from data.",
               "subprocess.run([\"cmd\", arg], check=True)", 78),
    "B605": _A("process started with a shell", "os.system/os.popen run a shell: command injection.",
               "subprocess.run([\"cmd\", arg], check=True)", 78),
    "B606": _A("process started without shell", "Check that the executable and arguments cannot be controlled by an attacker.",
               "subprocess.run([\"/usr/bin/cmd\", arg], check=True)", 78),
    "B607": _A("partial executable path", "A relative program name is looked up in PATH, which may be attacker-controlled.",
               "subprocess.run([shutil.which(\"cmd\") or \"/usr/bin/cmd\", arg], check=True)", 78),
    "B608": _A("SQL built from strings", "Formatting values into SQL allows SQL injection.",
               "cursor.execute(\"SELECT * FROM users WHERE id = %s\", (user_id,))", 89),
    "B609": _A("wildcard injection", "A shell wildcard lets file names become command options.",
               "subprocess.run([\"tar\", \"-czf\", out, \"--\", *paths], check=True)", 78),
    "B610": _A("Django extra()", "QuerySet.extra with formatted SQL allows SQL injection.",
               "User.objects.filter(name=name)", 89),
    "B611": _A("Django RawSQL", "RawSQL with formatted SQL allows SQL injection.",
               "RawSQL(\"SELECT ... WHERE id = %s\", (value,))", 89),
    "B614": _A("torch.load", "torch.load unpickles arbitrary objects unless weights_only=True.",
               "torch.load(path, weights_only=True)", 502),
    "B615": _A("Hugging Face download without revision", "An unpinned download can change under you.",
               "from_pretrained(name, revision=\"<commit sha>\")", 494),
    "B701": _A("Jinja2 autoescape off", "Templates without autoescaping allow cross-site scripting.",
               "Environment(loader=loader, autoescape=select_autoescape())", 94),
    "B702": _A("Mako templates", "Mako does not escape by default (cross-site scripting).",
               "Template(text, default_filters=[\"h\"])", 80),
    "B703": _A("Django mark_safe", "mark_safe on built strings allows cross-site scripting.",
               "format_html(\"<b>{}</b>\", value)", 80),
    "B704": _A("markupsafe.Markup on data", "Markup() on built strings allows cross-site scripting.",
               "Markup(\"<b>{}</b>\").format(value)", 79),
    "SECRET": _A("hard-coded secret", "A credential in source code leaks with the code and its history.",
                 "api_key = os.environ[\"SERVICE_API_KEY\"]", 798),
    "JS001": _A("eval", "eval runs arbitrary code.", "const data = JSON.parse(text);", 95),
    "JS002": _A("new Function", "new Function compiles a string into code.", "const handlers = { name: fn }; handlers[name]();", 95),
    "JS003": _A("string timer", "A string argument to setTimeout/setInterval is evaluated.", "setTimeout(() => run(), 1000);", 95),
    "JS004": _A("innerHTML", "Assigning HTML built from data allows cross-site scripting.", "element.textContent = value;", 79),
    "JS005": _A("document.write", "document.write/insertAdjacentHTML insert raw HTML.",
                "element.append(document.createTextNode(value));", 79),
    "JS006": _A("dangerouslySetInnerHTML", "Raw HTML in React allows cross-site scripting.",
                "<div>{value}</div>  // or sanitize with DOMPurify.sanitize(html)", 79),
    "JS007": _A("child_process.exec", "exec runs a shell: command injection.",
                "execFile(\"ls\", [\"-l\", dir], callback);", 78),
    "JS008": _A("shell: true", "spawn/execFile with shell: true run a shell.", "spawn(\"ls\", [\"-l\", dir]);", 78),
    "JS009": _A("weak hash", "MD5/SHA-1 are broken.", "crypto.createHash(\"sha256\")", 327),
    "JS010": _A("weak cipher", "DES/RC4/ECB are broken.", "crypto.createCipheriv(\"aes-256-gcm\", key, iv)", 327),
    "JS011": _A("createCipher", "createCipher derives keys without IV or salt.", "crypto.createCipheriv(\"aes-256-gcm\", key, iv)", 327),
    "JS012": _A("TLS verification disabled", "Any certificate is accepted.", "https.request({ ...options, rejectUnauthorized: true })", 295),
    "JS013": _A("SQL built from strings", "Concatenated SQL allows SQL injection.",
                "db.query(\"SELECT * FROM users WHERE id = $1\", [userId]);", 89),
    "JS014": _A("vm module", "vm is not a sandbox.", None, 95),
    "JS015": _A("unserialize", "Deserializing untrusted data can run code.", "const data = JSON.parse(text);", 502),
    "JS016": _A("Math.random", "Math.random is predictable.", "crypto.randomBytes(32).toString(\"hex\")", 330),
    "JS017": _A("insecure cookie", "Cookies without Secure/HttpOnly can leak.", "{ httpOnly: true, secure: true, sameSite: \"lax\" }", 614),
    "JS018": _A("JWT alg none", "Unsigned tokens are accepted.", "jwt.verify(token, key, { algorithms: [\"HS256\"] })", 347),
    "JS019": _A("postMessage to *", "Data goes to any origin.", "target.postMessage(data, \"https://app.example.com\")", 345),
    "JS020": _A("Angular sanitizer bypass", "Bypassing the sanitizer allows cross-site scripting.", None, 79),
}


@lru_cache(maxsize=1)
def _bandit_registry() -> dict[str, tuple[str, int | None]]:
    """Bandit's own test names and CWEs (plugins and blacklist entries), by test id."""
    from bandit.core import extension_loader

    out: dict[str, tuple[str, int | None]] = {}
    manager = extension_loader.MANAGER
    for plugin in manager.plugins:
        test_id = getattr(plugin.plugin, "_test_id", None)
        if test_id:
            out[test_id] = (plugin.name.replace("_", " "), None)
    for entries in manager.blacklist.values():
        for entry in entries:
            cwe = entry.get("cwe")
            cwe_id = cwe if isinstance(cwe, int) else getattr(cwe, "id", None)
            message = (entry.get("message") or entry["name"]).replace("{name}", entry["name"])
            out[entry["id"]] = (message, cwe_id)
    return out


def advice_for(test_id: str) -> Advice | None:
    """Advice for a test id, or None for an id nobody knows."""
    key = (test_id or "").strip().upper()
    if key in _WRITTEN:
        return _WRITTEN[key]
    known = _bandit_registry().get(key)
    if known is None:
        return None
    name, cwe = known
    return Advice(f"Bandit {key}", f"{name.rstrip('.')} (see Bandit's documentation for {key}).", None, cwe)
