-- Protege plugin entry: user commands, ghost text on attach, and the client side of server commands.
-- The server itself starts with require('protege').setup() or vim.lsp.enable('protege').
if vim.g.loaded_protege then
  return
end
vim.g.loaded_protege = true

local api = vim.api

local function commands()
  return require('protege.commands')
end

api.nvim_create_user_command('ProtegeExplain', function(opts)
  commands().explain(opts)
end, { range = true, desc = 'Protege: explain the selected lines (or the code at the cursor)' })

api.nvim_create_user_command('ProtegeStatus', function()
  commands().status()
end, { desc = 'Protege: show model, cache and index status' })

api.nvim_create_user_command('ProtegeIndex', function()
  commands().index()
end, { desc = 'Protege: index the workspace for context and search' })

api.nvim_create_user_command('ProtegeSearch', function(opts)
  commands().search(opts.args)
end, { nargs = '+', desc = 'Protege: search the repository index into the quickfix list' })

local group = api.nvim_create_augroup('protege', { clear = true })

local function is_protege(client_id)
  local client = vim.lsp.get_client_by_id(client_id)
  return client and client.name == 'protege' and client or nil
end

api.nvim_create_autocmd('LspAttach', {
  group = group,
  callback = function(ev)
    local client = is_protege(ev.data.client_id)
    if not client then
      return
    end
    require('protege.inline').attach(client, ev.buf)
    if require('protege').options.codelens and client.server_capabilities.codeLensProvider then
      vim.lsp.codelens.refresh({ bufnr = ev.buf })
      api.nvim_create_autocmd({ 'BufEnter', 'InsertLeave' }, {
        group = group,
        buffer = ev.buf,
        callback = function()
          vim.lsp.codelens.refresh({ bufnr = ev.buf })
        end,
      })
    end
  end,
})

api.nvim_create_autocmd('LspDetach', {
  group = group,
  callback = function(ev)
    if is_protege(ev.data.client_id) then
      require('protege.inline').detach(ev.buf)
    end
  end,
})

-- Indexing reports work-done progress; echo it without filling the message history.
api.nvim_create_autocmd('LspProgress', {
  group = group,
  callback = function(ev)
    local value = ev.data and ev.data.params and ev.data.params.value
    if type(value) ~= 'table' or not is_protege(ev.data.client_id) then
      return
    end
    -- Titles sent by the server usually name Protege already.
    local title = value.title or ''
    if not title:find('^Protege') then
      title = vim.trim('Protege: ' .. title)
    end
    local text = ('%s %s%s'):format(
      title,
      value.message or '',
      value.percentage and (' (%d%%)'):format(value.percentage) or ''
    )
    api.nvim_echo({ { vim.trim(text) } }, false, {})
  end,
})

-- Code actions and code lenses run `protege.explain`; show its reply instead of dropping it.
vim.lsp.commands['protege.explain'] = function(command, ctx)
  require('protege.commands').explain_arguments(command.arguments or {}, ctx.bufnr)
end
