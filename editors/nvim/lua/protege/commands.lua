--- :ProtegeExplain, :ProtegeStatus, :ProtegeIndex and :ProtegeSearch: each sends one server
--- command (workspace/executeCommand) and shows the reply.
local protege = require('protege')

local M = {}

local api = vim.api

--- The latest reply of each command, for scripts and statuslines.
M.last = {} ---@type table<string, any>

---@type table<string, integer>
local output_buffers = {}

local function output_buffer(name)
  local buf = output_buffers[name]
  if buf and api.nvim_buf_is_valid(buf) then
    return buf
  end
  buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_name(buf, 'protege://' .. name)
  vim.bo[buf].filetype = 'markdown'
  vim.bo[buf].bufhidden = 'hide'
  vim.bo[buf].swapfile = false
  vim.keymap.set('n', 'q', '<Cmd>close<CR>', { buffer = buf, desc = 'Close' })
  output_buffers[name] = buf
  return buf
end

--- Show `lines` in the `protege://<name>` buffer, in a split or a float (setup's `window`).
---@param name string
---@param lines string[]
---@return integer bufnr
function M.show(name, lines)
  local buf = output_buffer(name)
  vim.bo[buf].modifiable = true
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  for _, win in ipairs(api.nvim_tabpage_list_wins(0)) do
    if api.nvim_win_get_buf(win) == buf then
      return buf -- already on screen: updated in place
    end
  end
  local height = math.max(3, math.min(#lines, math.floor(vim.o.lines / 2)))
  if protege.options.window == 'float' then
    local width = math.min(100, vim.o.columns - 4)
    api.nvim_open_win(buf, true, {
      relative = 'editor',
      width = width,
      height = height,
      row = math.floor((vim.o.lines - height) / 2),
      col = math.floor((vim.o.columns - width) / 2),
      border = 'rounded',
      title = ' Protege ',
    })
    vim.wo.wrap = true
  else
    local from = api.nvim_get_current_win()
    vim.cmd(('botright %dsplit'):format(height))
    api.nvim_win_set_buf(0, buf)
    vim.wo.wrap = true
    api.nvim_set_current_win(from)
  end
  return buf
end

--- A reply (any JSON value) as indented `key: value` lines.
---@return string[]
function M.format(value, indent, out)
  indent, out = indent or '', out or {}
  if type(value) ~= 'table' then
    out[#out + 1] = indent .. tostring(value)
    return out
  end
  local keys = vim.tbl_keys(value)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    local v = value[k]
    if type(v) == 'table' and next(v) ~= nil then
      out[#out + 1] = ('%s- %s:'):format(indent, k)
      M.format(v, indent .. '  ', out)
    else
      local shown = type(v) == 'table' and '{}' or (v == vim.NIL and 'null' or tostring(v))
      out[#out + 1] = ('%s- %s: %s'):format(indent, k, shown)
    end
  end
  return out
end

local function explanation_lines(reply)
  local markdown = type(reply) == 'table' and reply.markdown or reply
  if type(markdown) ~= 'string' or markdown == '' then
    markdown = 'The server returned no explanation for this code.'
  end
  return vim.split(markdown, '\n', { plain = true })
end

--- Ask the server to explain code and show the Markdown it returns.
---@param arguments any[] `{ { uri = ..., range = ... } }` or `{ uri, line }`
---@param bufnr? integer
function M.explain_arguments(arguments, bufnr)
  protege.execute('protege.explain', arguments, function(err, reply)
    if err then
      protege.notify_error('explain', err)
      return
    end
    M.last.explain = reply
    M.show('explanation', explanation_lines(reply))
  end, bufnr)
end

--- :[range]ProtegeExplain — the given lines, or the code around the cursor.
---@param opts { range: integer, line1: integer, line2: integer }
function M.explain(opts)
  local bufnr = api.nvim_get_current_buf()
  local client = protege.client(bufnr)
  if not client then
    protege.notify_error('explain', { message = 'no Protege client in this buffer' })
    return
  end
  local uri = vim.uri_from_bufnr(bufnr)
  local arguments
  if opts.range and opts.range > 0 then
    local last = api.nvim_buf_get_lines(bufnr, opts.line2 - 1, opts.line2, false)[1] or ''
    local end_char = vim.lsp.util.character_offset(bufnr, opts.line2 - 1, #last, client.offset_encoding)
    arguments = {
      {
        uri = uri,
        range = {
          start = { line = opts.line1 - 1, character = 0 },
          ['end'] = { line = opts.line2 - 1, character = end_char },
        },
      },
    }
  else
    arguments = { uri, api.nvim_win_get_cursor(0)[1] - 1 }
  end
  M.explain_arguments(arguments, bufnr)
end

--- :ProtegeStatus — the server's status (model, device, cache, index) plus this client's state.
function M.status()
  local bufnr = api.nvim_get_current_buf()
  protege.execute('protege.status', {}, function(err, reply)
    if err then
      protege.notify_error('status', err)
      return
    end
    M.last.status = reply
    local client = protege.client(bufnr)
    local lines = { '# Protege status', '' }
    vim.list_extend(lines, M.format(reply))
    vim.list_extend(lines, {
      '',
      '## Neovim client',
      '',
      ('- client: %d, root %s'):format(client and client.id or -1, client and client.root_dir or '?'),
      ('- ghost text: %s'):format(require('protege.inline').mode(bufnr) or 'off in this buffer'),
    })
    M.show('status', lines)
  end, bufnr)
end

--- :ProtegeIndex — (re)index the workspace; progress arrives as LSP work-done progress.
function M.index()
  vim.notify('Protege: indexing the workspace…', vim.log.levels.INFO)
  protege.execute('protege.indexWorkspace', {}, function(err, reply)
    if err then
      protege.notify_error('indexing', err)
      return
    end
    M.last.index = reply
    local summary = type(reply) == 'table' and table.concat(M.format(reply), ' ') or tostring(reply)
    vim.notify('Protege: workspace indexed ' .. summary, vim.log.levels.INFO)
  end)
end

--- :ProtegeSearch {query} — repository search results in the quickfix list.
---@param query string
function M.search(query)
  if query == nil or vim.trim(query) == '' then
    vim.notify('Protege: give a search query, e.g. :ProtegeSearch parse config', vim.log.levels.ERROR)
    return
  end
  local client = protege.client(0)
  local root = client and client.root_dir or vim.fn.getcwd()
  protege.execute('protege.search', { { query = query, k = 20 } }, function(err, reply)
    if err then
      protege.notify_error('search', err)
      return
    end
    local hits = type(reply) == 'table' and (reply.results or reply) or {}
    local items = {}
    for _, hit in ipairs(hits) do
      if type(hit) == 'table' and type(hit.path) == 'string' then
        local path = hit.path
        if type(hit.uri) == 'string' then
          path = vim.uri_to_fname(hit.uri)
        elseif not path:match('^/') then
          path = vim.fs.joinpath(root, path)
        end
        -- 0-based lines, as in LSP: the server sends start_line; line/startLine are accepted too.
        local line = tonumber(hit.start_line) or tonumber(hit.startLine) or tonumber(hit.line) or 0
        items[#items + 1] = {
          filename = path,
          lnum = line + 1,
          text = ('%s  (score %.3f)'):format(type(hit.symbol) == 'string' and hit.symbol or '',
            tonumber(hit.score) or 0),
        }
      end
    end
    M.last.search = items
    vim.fn.setqflist({}, ' ', { title = 'Protege: ' .. query, items = items })
    if #items == 0 then
      vim.notify(('Protege: nothing found for %q'):format(query), vim.log.levels.INFO)
    else
      vim.cmd('botright copen')
    end
  end)
end

return M
