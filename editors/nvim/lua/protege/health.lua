--- :checkhealth protege — Neovim version, server executable, running clients and their status.
local M = {}

local health = vim.health

local function check_neovim()
  local v = vim.version()
  local version = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') == 0 then
    health.error(('Neovim %s is too old; Protege needs 0.10 or newer'):format(version))
    return
  end
  health.ok('Neovim ' .. version)
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok("vim.lsp.config/vim.lsp.enable available: `vim.lsp.enable('protege')` works")
  else
    health.info("Neovim < 0.11: require('protege').setup() starts the server with vim.lsp.start")
  end
  if require('protege.inline').native_available() then
    health.ok('ghost text: native vim.lsp.inline_completion')
  else
    health.info('ghost text: extmark fallback (native inline completion arrives in Neovim 0.12)')
  end
end

local function check_command()
  local ok, config = pcall(require('protege').resolved_config)
  if not ok then
    health.error(tostring(config))
    return
  end
  local cmd = config.cmd
  if type(cmd) ~= 'table' then
    health.info('server command is a function (custom transport); not checked')
    return
  end
  local exe = cmd[1]
  local path = exe and vim.fn.exepath(exe) or ''
  if path == '' then
    health.error(
      ('server executable %q not found'):format(tostring(exe)),
      { 'install Protege (pip install -e . in its repository) so `protege` is on PATH',
        "or point `cmd` at it: require('protege').setup({ cmd = { '/path/to/venv/bin/protege', 'serve' } })" }
    )
  else
    health.ok(('server command: %s (%s)'):format(table.concat(cmd, ' '), path))
  end
end

local function check_clients()
  local clients = vim.lsp.get_clients({ name = 'protege' })
  if #clients == 0 then
    health.warn('no Protege client is running',
      { "call vim.lsp.enable('protege') or require('protege').setup(), then open a file" })
    return
  end
  for _, client in ipairs(clients) do
    local buffers = vim.tbl_keys(client.attached_buffers or {})
    health.ok(('client %d running (root %s, %d buffer(s) attached)'):format(
      client.id, client.root_dir or '?', #buffers))
    if not client.server_capabilities or not client.server_capabilities.inlineCompletionProvider then
      health.warn('the server did not advertise textDocument/inlineCompletion: no ghost text')
    end
    local request_sync = vim.fn.has('nvim-0.11') == 1 and function(...)
      return client:request_sync(...)
    end or client.request_sync
    local reply = request_sync('workspace/executeCommand', { command = 'protege.status', arguments = {} }, 5000)
    if not reply or reply.err then
      health.warn('protege.status failed: ' .. (reply and reply.err and reply.err.message or 'timed out'))
    else
      local status = reply.result or {}
      local model = type(status.model) == 'table' and status.model or {}
      local state = model.state or '?'
      local line = ('model %s: %s'):format(tostring(model.path or status.model), tostring(state))
      if state == 'error' then
        health.error(line .. ' — ' .. tostring(model.error))
      elseif state == 'ready' then
        health.ok(line)
      else
        health.info(line)
      end
      local index = type(status.index) == 'table' and status.index or {}
      health.info(('index: %s'):format(tostring(index.state or vim.inspect(index))))
    end
  end
end

function M.check()
  health.start('Neovim')
  check_neovim()
  health.start('Server')
  check_command()
  check_clients()
end

return M
