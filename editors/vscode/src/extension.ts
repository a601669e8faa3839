/**
 * The Protege VS Code extension: starts the Protege language server and wires its features
 * (inline completions, explanations, search, indexing) into VS Code. All logic lives in the server;
 * this file only launches it, passes settings through, and shows what it returns.
 */

import { spawn } from "node:child_process";
import * as net from "node:net";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  ResponseError,
  type ServerOptions,
  State,
  type StreamInfo,
} from "vscode-languageclient/node";
import {
  contributedKeys,
  lastStderrLine,
  startFailureMessage,
  explanationMarkdown,
  jsonToMarkdown,
  modelState,
  parseAddress,
  SECTION,
  SERVER_COMMANDS,
  searchArguments,
  searchHits,
  searchPick,
  statusSummary,
  wireOptions,
  type JsonObject,
} from "./protocol";

const DOC_SCHEME = "protege";

let client: LanguageClient | undefined;
let clientState: vscode.Disposable | undefined;
let statusItem: vscode.StatusBarItem;
let settingKeys: string[] = [];
const documents = new Map<string, string>();
const documentChanged = new vscode.EventEmitter<vscode.Uri>();
// The server's stderr: shown in the "Protege Server" output, and its last lines quoted when it fails.
let serverOutput: vscode.OutputChannel | undefined;
const stderrTail: string[] = [];
const STDERR_LINES = 40;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  settingKeys = contributedKeys(context.extension.packageJSON);

  statusItem = vscode.window.createStatusBarItem("protege.status", vscode.StatusBarAlignment.Right, 100);
  statusItem.name = "Protege";
  statusItem.command = "protege.vscode.showStatus";
  setStatus("$(sync~spin) Protege", "Protege: starting the language server");
  statusItem.show();
  serverOutput = vscode.window.createOutputChannel("Protege Server");

  context.subscriptions.push(
    statusItem,
    serverOutput,
    documentChanged,
    // Explanations and status reports are shown as read-only Markdown documents.
    vscode.workspace.registerTextDocumentContentProvider(DOC_SCHEME, {
      onDidChange: documentChanged.event,
      provideTextDocumentContent: (uri) => documents.get(uri.toString()) ?? "",
    }),
    vscode.commands.registerCommand("protege.vscode.indexWorkspace", indexWorkspace),
    vscode.commands.registerCommand("protege.vscode.explainSelection", explainSelection),
    vscode.commands.registerCommand("protege.vscode.showStatus", showStatus),
    vscode.commands.registerCommand("protege.vscode.search", search),
    vscode.commands.registerCommand("protege.vscode.restartServer", restartServer),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
  );

  await startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}

async function stopClient(): Promise<void> {
  clientState?.dispose();
  clientState = undefined;
  const running = client;
  client = undefined;
  if (running?.needsStop()) {
    await running.stop();
  }
}

/**
 * `[key, value]` for every contributed setting. Defaults are sent too (they equal the server's, which
 * a test checks), so that removing a setting restores the default on a live server.
 */
function currentSettings(scope?: vscode.ConfigurationScope): [string, unknown][] {
  const config = vscode.workspace.getConfiguration(SECTION, scope);
  return settingKeys.map((key) => [key, config.get(key)]);
}

function serverOptions(): ServerOptions {
  const config = vscode.workspace.getConfiguration(SECTION);
  const address = config.get<string>("server.address", "").trim();
  if (address) {
    const { host, port } = parseAddress(address);
    return () =>
      new Promise<StreamInfo>((resolve, reject) => {
        const socket = net.connect(port, host, () => resolve({ reader: socket, writer: socket }));
        socket.once("error", reject);
      });
  }
  const command = serverCommand();
  const args = config.get<string[]>("server.args", ["serve"]);
  // Spawned here rather than by the client: no transport flag is appended (stdio is the server's
  // default), a missing executable fails at once with ENOENT, and stderr is kept for error messages.
  return () =>
    new Promise((resolve, reject) => {
      stderrTail.length = 0;
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: process.env });
      child.stderr?.setEncoding("utf8");
      child.stderr?.on("data", (chunk: string) => {
        serverOutput?.append(chunk);
        stderrTail.push(...chunk.split(/\r?\n/));
        stderrTail.splice(0, Math.max(0, stderrTail.length - STDERR_LINES));
      });
      child.once("error", reject);
      child.once("spawn", () => resolve(child));
    });
}

function serverCommand(): string {
  return vscode.workspace.getConfiguration(SECTION).get<string>("server.command", "protege");
}

async function startClient(): Promise<void> {
  let server: ServerOptions;
  try {
    server = serverOptions();
  } catch (err) {
    setStatus("$(error) Protege", String((err as Error).message));
    void vscode.window.showErrorMessage((err as Error).message);
    return;
  }
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: wireOptions(currentSettings()),
    middleware: {
      workspace: {
        // Answer the server's `protege` section with the same camelCase options as at startup,
        // leaving out client-only settings the server would warn about.
        configuration: async (params, token, next) => {
          const defaults = await next(params, token);
          if (defaults instanceof ResponseError) {
            return defaults;
          }
          return params.items.map((item, i) => {
            if (item.section !== SECTION) {
              return defaults[i];
            }
            const scope = item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined;
            return wireOptions(currentSettings(scope));
          });
        },
      },
      // Code actions and code lenses run server commands directly; show what `explain` returns.
      executeCommand: async (command, args, next) => {
        const result = await next(command, args);
        if (command === SERVER_COMMANDS.explain) {
          await showMarkdown("explanation", explanationMarkdown(result));
        }
        return result;
      },
    },
  };
  client = new LanguageClient(SECTION, "Protege", server, clientOptions);
  // Inline completion is a built-in feature since vscode-languageclient 10 (LSP 3.18); on 9.x it
  // was proposed. Registering the proposed set keeps ghost text working on either line.
  client.registerProposedFeatures();
  clientState = client.onDidChangeState(({ newState }) => {
    if (newState === State.Running) {
      void followModelLoad();
    } else if (newState === State.Starting) {
      setStatus("$(sync~spin) Protege", "Protege: starting the language server");
    } else {
      const said = lastStderrLine(stderrTail);
      setStatus("$(error) Protege", "Protege: the language server stopped" + (said ? ` (${said})` : "") +
        "; run 'Protege: Restart Server'.");
    }
  });
  try {
    await client.start();
  } catch (err) {
    const message = startFailureMessage(err, stderrTail, serverCommand(), vscode.env.remoteName);
    setStatus("$(error) Protege", message);
    void vscode.window.showErrorMessage(message);
  }
}

function setStatus(text: string, tooltip: string): void {
  statusItem.text = text;
  statusItem.tooltip = tooltip;
}

async function runServerCommand(command: string, args: unknown[] = []): Promise<unknown> {
  if (!client || client.state !== State.Running) {
    throw new Error("The Protege language server is not running; run 'Protege: Restart Server'.");
  }
  return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
}

async function reportErrors(what: string, action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    void vscode.window.showErrorMessage(`Protege could not ${what}: ${(err as Error).message}`);
  }
}

const MODEL_POLL_MS = 500;
const MODEL_POLL_LIMIT_MS = 10 * 60 * 1000;

/**
 * Once the server runs, the model loads in its background: the status item spins ("loading the
 * model") until the server reports it ready, so the sparkle means completions can come at once.
 */
async function followModelLoad(): Promise<void> {
  const watched = client;
  const deadline = Date.now() + MODEL_POLL_LIMIT_MS;
  setStatus("$(sync~spin) Protege", "Protege: loading the model");
  while (client === watched && client?.state === State.Running && Date.now() < deadline) {
    let status: unknown;
    try {
      status = await runServerCommand(SERVER_COMMANDS.status);
    } catch {
      return; // the server stopped; the state handler says so
    }
    const model = modelState(status);
    if (model.state === "ready" || model.state === "unknown") {
      setStatus("$(sparkle) Protege", statusSummary(status));
      return;
    }
    if (model.state === "error") {
      setStatus("$(warning) Protege", `Protege: the model did not load (${model.error ?? "no reason given"}); ` +
        "set protege.model or run 'Protege: Show Status'.");
      return;
    }
    await new Promise((r) => setTimeout(r, MODEL_POLL_MS));
  }
}

async function showMarkdown(name: string, markdown: string): Promise<void> {
  const uri = vscode.Uri.from({ scheme: DOC_SCHEME, path: `/${name}.md` });
  documents.set(uri.toString(), markdown);
  documentChanged.fire(uri);
  try {
    await vscode.commands.executeCommand("markdown.showPreviewToSide", uri);
  } catch {
    // Without the built-in Markdown extension, show the source instead.
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true });
  }
}

async function indexWorkspace(): Promise<void> {
  await reportErrors("index the workspace", async () => {
    setStatus("$(sync~spin) Protege", "Protege: indexing the workspace");
    let summary = "Protege: running";
    try {
      // The server reports progress with work-done progress, which the client shows itself.
      const result = await runServerCommand(SERVER_COMMANDS.indexWorkspace);
      void vscode.window.showInformationMessage("Protege indexed the workspace.");
      if (result && typeof result === "object") {
        summary = `Protege index:\n${jsonToMarkdown(result)}`;
      }
    } finally {
      setStatus("$(sparkle) Protege", summary);
    }
  });
}

async function explainSelection(): Promise<void> {
  await reportErrors("explain this code", async () => {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !client) {
      throw new Error("open a file and select the code to explain first");
    }
    const selection = editor.selection.isEmpty
      ? editor.document.lineAt(editor.selection.active.line).range
      : editor.selection;
    const args = [
      {
        uri: client.code2ProtocolConverter.asUri(editor.document.uri),
        range: client.code2ProtocolConverter.asRange(selection),
      },
    ];
    // The server reports its own work-done progress while it explains.
    const reply = await runServerCommand(SERVER_COMMANDS.explain, args);
    await showMarkdown("explanation", explanationMarkdown(reply));
  });
}

async function showStatus(): Promise<void> {
  await reportErrors("read its status", async () => {
    const status = await runServerCommand(SERVER_COMMANDS.status);
    statusItem.tooltip = statusSummary(status);
    await showMarkdown("status", `# Protege status\n\n${jsonToMarkdown(status)}\n`);
  });
}

async function search(): Promise<void> {
  await reportErrors("search the repository", async () => {
    const query = await vscode.window.showInputBox({ prompt: "Search the repository index", placeHolder: "query" });
    if (!query) {
      return;
    }
    const hits = searchHits(await runServerCommand(SERVER_COMMANDS.search, searchArguments(query)));
    if (hits.length === 0) {
      void vscode.window.showInformationMessage(`Protege found nothing for "${query}".`);
      return;
    }
    const picked = await vscode.window.showQuickPick(
      hits.map((hit) => ({ ...searchPick(hit), hit })),
      { matchOnDescription: true, placeHolder: `${hits.length} results for "${query}"` },
    );
    if (!picked) {
      return;
    }
    const root = vscode.workspace.workspaceFolders?.[0]?.uri;
    const { uri: hitUri, path } = picked.hit;
    const uri = hitUri
      ? vscode.Uri.parse(hitUri)
      : root && !path.startsWith("/")
        ? vscode.Uri.joinPath(root, path)
        : vscode.Uri.file(path);
    const position = new vscode.Position(picked.hit.line, 0);
    await vscode.window.showTextDocument(uri, { selection: new vscode.Range(position, position) });
  });
}

async function restartServer(): Promise<void> {
  // A fresh client, so that changed server.* settings (command, address) take effect.
  await reportErrors("restart", async () => {
    await stopClient();
    await startClient();
  });
}

async function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
  if (!event.affectsConfiguration(SECTION) || !client) {
    return;
  }
  if (event.affectsConfiguration(`${SECTION}.server`)) {
    const choice = await vscode.window.showInformationMessage(
      "Protege server settings changed; restart the language server to use them.",
      "Restart",
    );
    if (choice === "Restart") {
      await restartServer();
    }
    return;
  }
  if (client.state === State.Running) {
    // Push the new options; the server also re-reads them through workspace/configuration.
    const settings: JsonObject = { [SECTION]: wireOptions(currentSettings()) };
    await client.sendNotification("workspace/didChangeConfiguration", { settings });
  }
}
