--- Protege for Neovim: starts the Protege language server and exposes its commands.
--- All logic lives in the server; this module only configures the client and relays requests.
local M = {}

M.name = 'protege'

---@class protege.InlineOptions
---@field enabled boolean Show ghost-text suggestions while typing.
---@field native 'auto'|boolean Use vim.lsp.inline_completion (Neovim >= 0.12) when available.
---@field accept_key string|false Insert-mode key that accepts the suggestion (falls back to the key itself).
---@field dismiss_key string|false Insert-mode key that hides the suggestion.
---@field trigger_key string|false Insert-mode key that asks for a suggestion now.
---@field debounce_ms integer Wait after the last keystroke before asking (extmark fallback only).
---@field hl_group string Highlight group of the ghost text.

---@class protege.Options
---@field cmd? string[] Server command (default: lsp/protege.lua's `{ 'protege', 'serve' }`).
---@field init_options? table Server options, camelCase (see the README).
---@field settings? table Answer to workspace/configuration, e.g. `{ protege = { maxNewTokens = 32 } }`.
---@field root_markers? string[]
---@field lsp_start 'auto'|'enable'|'start' How to start the server: vim.lsp.enable (>= 0.11) or vim.lsp.start.
---@field inline protege.InlineOptions
---@field window 'split'|'float' Where :ProtegeExplain and :ProtegeStatus show their output.
---@field codelens boolean Refresh the server's code lenses ("Explain") in attached buffers.

---@type protege.Options
M.defaults = {
  cmd = nil,
  init_options = nil,
  settings = nil,
  root_markers = nil,
  lsp_start = 'auto',
  inline = {
    enabled = true,
    native = 'auto',
    accept_key = '<Tab>',
    dismiss_key = '<C-]>',
    trigger_key = '<M-\\>',
    debounce_ms = 50,
    hl_group = 'ProtegeGhostText',
  },
  window = 'split',
  codelens = false,
}

---@type protege.Options
M.options = vim.deepcopy(M.defaults)

local has_011 = vim.fn.has('nvim-0.11') == 1

--- The config table from lsp/protege.lua on 'runtimepath'.
---@return table
function M.base_config()
  local files = vim.api.nvim_get_runtime_file('lsp/protege.lua', false)
  if #files == 0 then
    error('protege: lsp/protege.lua is not on runtimepath; add the plugin directory (editors/nvim) to it')
  end
  return dofile(files[1])
end

--- The LSP fields of `opts` that override lsp/protege.lua.
local function lsp_overrides(opts)
  local out = {}
  for _, key in ipairs({ 'cmd', 'init_options', 'settings', 'root_markers' }) do
    local value = opts[key]
    -- An empty Lua table would go out as a JSON array; the server expects an object.
    if type(value) == 'table' and key ~= 'cmd' and next(value) == nil then
      value = vim.empty_dict()
    end
    if value ~= nil then
      out[key] = value
    end
  end
  if opts.root_markers then
    local markers = opts.root_markers
    out.root_dir = function(bufnr, on_dir)
      on_dir(vim.fs.root(bufnr, markers) or vim.fn.getcwd())
    end
  end
  return out
end

--- The resolved client config: lsp/protege.lua merged with setup() options (and, on >= 0.11,
--- anything set with vim.lsp.config('protege', ...)).
---@return table
function M.resolved_config()
  if has_011 and M.options.lsp_start ~= 'start' then
    return vim.lsp.config[M.name] or M.base_config()
  end
  return vim.tbl_deep_extend('force', M.base_config(), lsp_overrides(M.options))
end

--- Start (or reuse) a client for `bufnr` with vim.lsp.start, for Neovim < 0.11.
local function start_legacy(bufnr)
  if vim.bo[bufnr].buftype ~= '' or vim.api.nvim_buf_get_name(bufnr) == '' then
    return
  end
  local config = M.resolved_config()
  local markers = config.root_markers or {}
  local root = vim.fs.root(bufnr, markers) or vim.fn.getcwd()
  vim.lsp.start({
    name = M.name,
    cmd = config.cmd,
    root_dir = root,
    init_options = config.init_options,
    settings = config.settings,
  }, { bufnr = bufnr })
end

--- Configure the plugin and start the server for file buffers.
---@param opts? protege.Options
function M.setup(opts)
  opts = opts or {}
  if not vim.list_contains({ 'auto', 'enable', 'start' }, opts.lsp_start or 'auto') then
    error(("protege: lsp_start must be 'auto', 'enable' or 'start', got %s"):format(vim.inspect(opts.lsp_start)))
  end
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
  local use_enable = M.options.lsp_start == 'enable' or (M.options.lsp_start == 'auto' and has_011)
  if use_enable then
    if not has_011 then
      error("protege: lsp_start = 'enable' needs Neovim >= 0.11 (vim.lsp.config/vim.lsp.enable)")
    end
    vim.lsp.config(M.name, lsp_overrides(opts))
    vim.lsp.enable(M.name)
    return
  end
  local group = vim.api.nvim_create_augroup('protege.start', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    callback = function(ev)
      start_legacy(ev.buf)
    end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
      start_legacy(bufnr)
    end
  end
end

--- The Protege client attached to `bufnr`, else any running Protege client.
---@param bufnr? integer
---@return vim.lsp.Client?
function M.client(bufnr)
  local clients = vim.lsp.get_clients({ name = M.name, bufnr = bufnr or 0 })
  if #clients == 0 then
    clients = vim.lsp.get_clients({ name = M.name })
  end
  return clients[1]
end

--- client:request on >= 0.11, client.request before (the method form arrived in 0.11).
---@return boolean, integer?
function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

--- Run a server command (`workspace/executeCommand`); `callback(err, result)` on the main loop.
---@param command string
---@param arguments? any[]
---@param callback fun(err: table?, result: any)
---@param bufnr? integer
function M.execute(command, arguments, callback, bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = M.client(bufnr)
  if not client then
    callback({
      message = "Protege is not running; call require('protege').setup() or vim.lsp.enable('protege') first",
    }, nil)
    return
  end
  local ok = M.request(client, 'workspace/executeCommand', {
    command = command,
    arguments = arguments,
  }, function(err, result)
    callback(err, result)
  end, bufnr)
  if not ok then
    callback({ message = 'the Protege server has stopped; see :checkhealth protege' }, nil)
  end
end

--- The last error reported, `{ what, message }`, for scripts and tests.
M.last_error = nil ---@type { what: string, message: string }?

--- Report an error from the server (or the client) in one line.
function M.notify_error(what, err)
  M.last_error = { what = what, message = err.message or vim.inspect(err) }
  vim.notify(('Protege: %s failed: %s'):format(what, err.message or vim.inspect(err)), vim.log.levels.ERROR)
end

-- The ghost-text API, re-exported for mappings: require('protege').accept() etc.
function M.accept(bufnr)
  return require('protege.inline').accept(bufnr)
end

function M.dismiss(bufnr)
  return require('protege.inline').dismiss(bufnr)
end

function M.trigger(bufnr)
  return require('protege.inline').trigger(bufnr)
end

return M
