--- Ghost-text inline completions (LSP textDocument/inlineCompletion).
--- Neovim >= 0.12 draws them natively (vim.lsp.inline_completion); older versions use the
--- fallback here: ask after typing pauses, draw the first suggestion with extmarks, accept with a key.
local protege = require('protege')

local M = {}

local api = vim.api
local ns = api.nvim_create_namespace('protege.inline')
local METHOD = 'textDocument/inlineCompletion'
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2

---@class (private) protege.Suggestion
---@field client_id integer
---@field text string Text to insert (a snippet's raw body when `snippet`).
---@field snippet boolean
---@field range integer[] {start_row, start_col, end_row, end_col}, 0-based bytes, end exclusive.
---@field command? table LSP command to run after accepting.
---@field row integer Cursor row (0-based) when shown.
---@field col integer Cursor byte column when shown.
---@field shown string The ghost text actually drawn (text past what is already typed).

---@class (private) protege.BufState
---@field mode 'native'|'extmark'
---@field timer? uv.uv_timer_t
---@field pending? { client: vim.lsp.Client, id: integer }
---@field suggestion? protege.Suggestion
---@field augroup? integer

---@type table<integer, protege.BufState>
local buffers = {}

api.nvim_set_hl(0, 'ProtegeGhostText', { default = true, link = 'Comment' })

--- Whether this Neovim has native inline completion (0.12+).
function M.native_available()
  local ic = vim.lsp.inline_completion
  return type(ic) == 'table' and type(ic.enable) == 'function' and type(ic.get) == 'function'
end

local function use_native()
  local native = protege.options.inline.native
  if native == 'auto' then
    return M.native_available()
  end
  return native == true and M.native_available()
end

--- LSP position character -> byte column in `row` (0-based), clamped to the line.
local function byte_col(bufnr, row, character, encoding)
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col
  if vim.fn.has('nvim-0.11') == 1 then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == 'utf-16')
  end
  return ok and math.min(col, #line) or #line
end

local function clear_marks(bufnr)
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

local function cancel_pending(st)
  if st.pending then
    local client, id = st.pending.client, st.pending.id
    st.pending = nil
    if vim.fn.has('nvim-0.11') == 1 then
      pcall(client.cancel_request, client, id)
    else
      pcall(client.cancel_request, id)
    end
  end
end

--- Hide the current suggestion (and drop any request in flight).
---@param bufnr? integer
function M.dismiss(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local st = buffers[bufnr]
  if not st then
    return
  end
  cancel_pending(st)
  st.suggestion = nil
  clear_marks(bufnr)
end

--- The suggestion on screen, if any: `{ text, shown, row, col }` (0-based row, byte col).
---@param bufnr? integer
function M.current(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local s = buffers[bufnr] and buffers[bufnr].suggestion
  if not s then
    return nil
  end
  return { text = s.text, shown = s.shown, row = s.row, col = s.col }
end

--- 'native', 'extmark', or nil when the buffer has no Protege ghost text.
function M.mode(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  return buffers[bufnr] and buffers[bufnr].mode
end

local function draw(bufnr, s)
  local hl = protege.options.inline.hl_group
  -- Skip what the user already typed inside the replaced range (the server may echo it).
  local typed = ''
  if s.range[1] == s.row and s.range[2] <= s.col then
    local line = api.nvim_buf_get_lines(bufnr, s.row, s.row + 1, false)[1] or ''
    typed = line:sub(s.range[2] + 1, s.col)
  end
  local text = s.text
  if typed ~= '' and text:sub(1, #typed) == typed then
    text = text:sub(#typed + 1)
  end
  s.shown = text
  local lines = vim.split(text, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], hl } }
  end
  clear_marks(bufnr)
  api.nvim_buf_set_extmark(bufnr, ns, s.row, s.col, {
    virt_text = { { lines[1], hl } },
    -- 'inline' pushes the rest of the line right instead of covering it.
    virt_text_pos = vim.fn.has('nvim-0.10') == 1 and 'inline' or 'overlay',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
end

local function on_result(bufnr, client, tick, row, col, err, result)
  local st = buffers[bufnr]
  if not st or not api.nvim_buf_is_valid(bufnr) then
    return
  end
  st.pending = nil
  if err then
    -- A request cancelled by newer typing is expected; anything else is worth a log line.
    if err.code ~= -32800 then
      vim.lsp.log.warn('protege inline completion failed', err)
    end
    return
  end
  -- Drop stale answers: the text or cursor moved on, or insert mode ended.
  local cursor = api.nvim_win_get_cursor(0)
  if api.nvim_get_current_buf() ~= bufnr or api.nvim_buf_get_changedtick(bufnr) ~= tick
    or cursor[1] - 1 ~= row or cursor[2] ~= col or not api.nvim_get_mode().mode:match('^i') then
    return
  end
  local items = result and (result.items or result) or {}
  for _, raw in ipairs(items) do
    local insert = raw.insertText
    local snippet = type(insert) == 'table'
    local text = snippet and insert.value or insert
    if type(text) == 'string' and text ~= '' then
      local range = { row, col, row, col }
      if raw.range then
        local enc = client.offset_encoding
        local s, e = raw.range.start, raw.range['end']
        range = { s.line, byte_col(bufnr, s.line, s.character, enc), e.line, byte_col(bufnr, e.line, e.character, enc) }
      end
      local suggestion = {
        client_id = client.id,
        text = text,
        snippet = snippet,
        range = range,
        command = raw.command,
        row = row,
        col = col,
        shown = text,
      }
      st.suggestion = suggestion
      draw(bufnr, suggestion)
      return
    end
  end
end

--- Ask the server for a suggestion at the cursor now.
---@param bufnr? integer
---@param trigger_kind? integer 1 = invoked by the user, 2 = automatic
function M.request(bufnr, trigger_kind)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local st = buffers[bufnr]
  local client = protege.client(bufnr)
  if not st or not client or bufnr ~= api.nvim_get_current_buf() then
    return
  end
  M.dismiss(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger_kind or TRIGGER_AUTOMATIC }
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local ok, id = protege.request(client, METHOD, params, function(err, result)
    on_result(bufnr, client, tick, cursor[1] - 1, cursor[2], err, result)
  end, bufnr)
  if ok and id then
    st.pending = { client = client, id = id }
  end
end

--- Ask now, as the user's explicit request (the trigger key).
function M.trigger(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local st = buffers[bufnr]
  if st and st.mode == 'native' then
    vim.lsp.inline_completion.get({ bufnr = bufnr })
    return
  end
  M.request(bufnr, TRIGGER_INVOKED)
end

local function schedule_request(bufnr)
  local st = buffers[bufnr]
  if not st then
    return
  end
  M.dismiss(bufnr)
  if not st.timer then
    st.timer = assert(vim.uv.new_timer())
  end
  st.timer:stop()
  st.timer:start(protege.options.inline.debounce_ms, 0, vim.schedule_wrap(function()
    if buffers[bufnr] and api.nvim_get_current_buf() == bufnr and api.nvim_get_mode().mode:match('^i') then
      M.request(bufnr, TRIGGER_AUTOMATIC)
    end
  end))
end

local function run_command(client, command, bufnr)
  if vim.fn.has('nvim-0.11') == 1 then
    client:exec_cmd(command, { bufnr = bufnr })
  else
    client._exec_cmd(command, { bufnr = bufnr })
  end
end

--- Insert the current suggestion. Returns false when there is none (so mappings can fall back).
---@param bufnr? integer
---@return boolean
function M.accept(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local st = buffers[bufnr]
  if st and st.mode == 'native' then
    return vim.lsp.inline_completion.get({ bufnr = bufnr }) == true
  end
  local s = st and st.suggestion
  if not s then
    return false
  end
  M.dismiss(bufnr)
  local r = s.range
  if s.snippet and vim.snippet then
    api.nvim_buf_set_text(bufnr, r[1], r[2], r[3], r[4], { '' })
    api.nvim_win_set_cursor(0, { r[1] + 1, r[2] })
    vim.snippet.expand(s.text)
  else
    local lines = vim.split(s.text, '\n', { plain = true })
    api.nvim_buf_set_text(bufnr, r[1], r[2], r[3], r[4], lines)
    local last_row = r[1] + #lines - 1
    local last_col = (#lines == 1 and r[2] or 0) + #lines[#lines]
    api.nvim_win_set_cursor(0, { last_row + 1, last_col })
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  if s.command and client then
    run_command(client, s.command, bufnr)
  end
  return true
end

local function map(bufnr, key, fn, desc)
  if key then
    vim.keymap.set('i', key, fn, { buffer = bufnr, desc = desc })
  end
end

local function feed(key)
  -- 'i': run right after this mapping, before keys already typed ahead.
  api.nvim_feedkeys(api.nvim_replace_termcodes(key, true, false, true), 'in', false)
end

--- Turn on ghost text for `bufnr` served by `client`.
---@param client vim.lsp.Client
---@param bufnr integer
function M.attach(client, bufnr)
  local opts = protege.options.inline
  if not opts.enabled or buffers[bufnr] or not client.server_capabilities.inlineCompletionProvider then
    return
  end
  local st = { mode = use_native() and 'native' or 'extmark' } ---@type protege.BufState
  buffers[bufnr] = st
  if st.mode == 'native' then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  else
    st.augroup = api.nvim_create_augroup(('protege.inline.%d'):format(bufnr), { clear = true })
    api.nvim_create_autocmd('TextChangedI', {
      group = st.augroup,
      buffer = bufnr,
      callback = function()
        schedule_request(bufnr)
      end,
    })
    api.nvim_create_autocmd('CursorMovedI', {
      group = st.augroup,
      buffer = bufnr,
      callback = function()
        local s = st.suggestion
        local cursor = api.nvim_win_get_cursor(0)
        if s and (cursor[1] - 1 ~= s.row or cursor[2] ~= s.col) then
          M.dismiss(bufnr)
        end
      end,
    })
    api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
      group = st.augroup,
      buffer = bufnr,
      callback = function()
        M.dismiss(bufnr)
        if st.timer then
          st.timer:stop()
        end
      end,
    })
  end
  local accept_key = opts.accept_key
  map(bufnr, accept_key, function()
    if not M.accept(bufnr) then
      feed(accept_key)
    end
  end, 'Protege: accept the suggestion')
  if st.mode == 'extmark' then
    -- Native ghost text hides itself when the cursor moves; only the fallback needs a key.
    map(bufnr, opts.dismiss_key, function()
      if st.suggestion then
        M.dismiss(bufnr)
      else
        feed(opts.dismiss_key)
      end
    end, 'Protege: dismiss the suggestion')
  end
  map(bufnr, opts.trigger_key, function()
    M.trigger(bufnr)
  end, 'Protege: suggest now')
end

--- Turn ghost text off for `bufnr`.
function M.detach(bufnr)
  local st = buffers[bufnr]
  if not st then
    return
  end
  M.dismiss(bufnr)
  if st.mode == 'native' then
    pcall(vim.lsp.inline_completion.enable, false, { bufnr = bufnr })
  end
  if st.augroup then
    pcall(api.nvim_del_augroup_by_id, st.augroup)
  end
  if st.timer then
    st.timer:stop()
    st.timer:close()
  end
  local opts = protege.options.inline
  for _, name in ipairs({ 'accept_key', 'dismiss_key', 'trigger_key' }) do
    local key = opts[name]
    if key then
      pcall(vim.keymap.del, 'i', key, { buffer = bufnr })
    end
  end
  buffers[bufnr] = nil
end

return M
