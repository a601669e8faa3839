-- Protege language server config: inline (ghost-text) completions, explanations and repository
-- search from a small local code model. Picked up by `vim.lsp.enable('protege')` on Neovim >= 0.11;
-- `require('protege').setup()` also uses it with `vim.lsp.start()` on older versions.
--
-- Server options (camelCase, all optional) go in `init_options`, e.g.
--   vim.lsp.config('protege', { init_options = { model = '/path/to/student', quantize = 'int8' } })
-- The same keys may be answered from `settings = { protege = { ... } }` (workspace/configuration).

local root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'go.mod', 'Cargo.toml', '.hg' }

local capabilities = vim.lsp.protocol.make_client_capabilities()
-- Neovim < 0.12 does not announce inline completion; lua/protege/inline.lua provides it there.
capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
  or { dynamicRegistration = false }

---@type vim.lsp.Config
return {
  cmd = { 'protege', 'serve' },
  capabilities = capabilities,
  -- No `filetypes`: a code assistant helps in every file-backed buffer.
  root_markers = root_markers,
  -- Without a marker, fall back to the working directory so one server serves the session
  -- (each root is a separate server process with its own copy of the model).
  root_dir = function(bufnr, on_dir)
    on_dir(vim.fs.root(bufnr, root_markers) or vim.fn.getcwd())
  end,
}
