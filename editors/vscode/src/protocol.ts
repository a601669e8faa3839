/**
 * Pure helpers shared by the extension and its tests: the server's command names, turning VS Code
 * settings into the server's camelCase options, and shaping server replies for display.
 * Nothing here imports `vscode`, so it runs under plain `node --test`.
 */

/** The section name the server asks for in `workspace/configuration`. */
export const SECTION = "protege";

/** Commands the server advertises through `workspace/executeCommand`. */
export const SERVER_COMMANDS = {
  status: "protege.status",
  indexWorkspace: "protege.indexWorkspace",
  search: "protege.search",
  explain: "protege.explain",
} as const;

/**
 * Settings under `protege.` that configure this client, never sent to the server.
 * (`trace.server` is read by vscode-languageclient itself.)
 */
export const CLIENT_ONLY_SETTINGS: readonly string[] = [
  "server.command",
  "server.args",
  "server.address",
  "trace.server",
];

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isClientOnly(key: string): boolean {
  return CLIENT_ONLY_SETTINGS.includes(key);
}

/**
 * Build the server's option object from `[dottedKey, value]` pairs relative to the `protege`
 * section, e.g. `["index.chromaUrl", "http://h:8000"]` -> `{index: {chromaUrl: "http://h:8000"}}`.
 * Only pairs with a defined value are sent, so the server's own defaults apply to the rest.
 */
export function wireOptions(entries: Iterable<readonly [string, unknown]>): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of entries) {
    if (value === undefined || isClientOnly(key)) {
      continue;
    }
    const parts = key.split(".");
    let node: JsonObject = out;
    for (const part of parts.slice(0, -1)) {
      const next = node[part];
      if (next === undefined || next === null || typeof next !== "object" || Array.isArray(next)) {
        node[part] = {};
      }
      node = node[part] as JsonObject;
    }
    node[parts[parts.length - 1] as string] = value as Json;
  }
  return out;
}

/** The dotted keys of every `protege.*` setting a package.json contributes, section prefix removed. */
export function contributedKeys(manifest: unknown): string[] {
  const props = (manifest as { contributes?: { configuration?: { properties?: object } } })
    ?.contributes?.configuration?.properties;
  if (!props) {
    return [];
  }
  return Object.keys(props)
    .filter((k) => k.startsWith(SECTION + "."))
    .map((k) => k.slice(SECTION.length + 1));
}

export interface Address {
  host: string;
  port: number;
}

/** Parse `host:port` (or `[v6]:port`) for `protege.server.address`; throws a one-sentence error. */
export function parseAddress(text: string): Address {
  const trimmed = text.trim();
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(trimmed);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (!match || !host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(
      `protege.server.address must look like "127.0.0.1:2087" (host:port, port 1-65535), got "${text}".`,
    );
  }
  return { host, port };
}

/** Render any JSON reply (e.g. `protege.status`) as a nested Markdown list. */
export function jsonToMarkdown(value: unknown, indent = 0): string {
  const pad = "  ".repeat(indent);
  if (value === null || typeof value !== "object") {
    return `${pad}- ${formatScalar(value)}`;
  }
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((v, i) => [String(i), v])
    : Object.entries(value);
  if (entries.length === 0) {
    return `${pad}- (empty)`;
  }
  return entries
    .map(([key, v]) =>
      v !== null && typeof v === "object"
        ? `${pad}- **${key}**\n${jsonToMarkdown(v, indent + 1)}`
        : `${pad}- **${key}**: ${formatScalar(v)}`,
    )
    .join("\n");
}

function formatScalar(value: unknown): string {
  if (typeof value === "string") {
    return value === "" ? '""' : value;
  }
  return JSON.stringify(value) ?? String(value);
}

/** A one-line summary of `protege.status` for the status bar tooltip. */
export function statusSummary(status: unknown): string {
  if (status === null || typeof status !== "object" || Array.isArray(status)) {
    return "Protege: no status";
  }
  const s = status as Record<string, unknown>;
  const parts: string[] = [];
  const model = pickString(s["model"]) ?? pickString((s["model"] as Record<string, unknown> | undefined)?.["path"]);
  if (model) {
    parts.push(`model ${model}`);
  }
  const device = pickString(s["device"]) ?? pickString((s["model"] as Record<string, unknown> | undefined)?.["device"]);
  if (device) {
    parts.push(`on ${device}`);
  }
  return parts.length ? `Protege: ${parts.join(" ")}` : "Protege: running";
}

/**
 * The model's load state from a `protege.status` reply: "ready", "error", "loading" (also while it is
 * still "unloaded", before the background load starts), or "unknown" for a reply without one.
 */
export function modelState(status: unknown): { state: "ready" | "loading" | "error" | "unknown"; error?: string } {
  const model = (status as { model?: unknown } | null)?.model;
  const state = (model as { state?: unknown } | null | undefined)?.state;
  if (state === "ready") {
    return { state: "ready" };
  }
  if (state === "error") {
    const error = pickString((model as { error?: unknown }).error);
    return error ? { state: "error", error } : { state: "error" };
  }
  if (state === "loading" || state === "unloaded") {
    return { state: "loading" };
  }
  return { state: "unknown" };
}

function pickString(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** The Markdown body of an explanation reply, or a one-sentence reason it has none. */
export function explanationMarkdown(reply: unknown): string {
  if (typeof reply === "string") {
    return reply;
  }
  const markdown = (reply as { markdown?: unknown } | null)?.markdown;
  if (typeof markdown === "string") {
    return markdown;
  }
  return "The server returned no explanation for this code.";
}

export interface SearchHit {
  /** Workspace-relative path. */
  path: string;
  /** The file's URI when the server sends one (it does); preferred over `path`. */
  uri?: string;
  /** Zero-based line, as in LSP positions. */
  line: number;
  symbol: string;
  score: number;
}

/** Arguments of `protege.search`: one object with the query and how many hits to return. */
export function searchArguments(query: string, k = 20): [{ query: string; k: number }] {
  return [{ query, k }];
}

/** Keep the well-formed hits of a `protege.search` reply, best first. */
export function searchHits(reply: unknown): SearchHit[] {
  const list = Array.isArray(reply)
    ? reply
    : Array.isArray((reply as { results?: unknown } | null)?.results)
      ? (reply as { results: unknown[] }).results
      : [];
  const hits: SearchHit[] = [];
  for (const raw of list) {
    const r = raw as Partial<Record<keyof SearchHit | "startLine" | "start_line", unknown>> | null;
    // The server sends index hits with a 0-based `start_line`; `line` and `startLine` are accepted too.
    const line = r?.start_line ?? r?.startLine ?? r?.line;
    if (r && typeof r.path === "string" && typeof line === "number") {
      const hit: SearchHit = {
        path: r.path,
        line: Math.max(0, Math.floor(line)),
        symbol: typeof r.symbol === "string" ? r.symbol : "",
        score: typeof r.score === "number" ? r.score : 0,
      };
      if (typeof r.uri === "string") {
        hit.uri = r.uri;
      }
      hits.push(hit);
    }
  }
  return hits.sort((a, b) => b.score - a.score);
}

/** Label and description for one search hit in a quick pick. */
export function searchPick(hit: SearchHit): { label: string; description: string } {
  const where = `${hit.path}:${hit.line + 1}`;
  return {
    label: hit.symbol || where,
    description: `${hit.symbol ? where + "  " : ""}score ${hit.score.toFixed(3)}`,
  };
}

/** Text of anything thrown: an Error's message, a string, or the JSON of an object (never "undefined"). */
export function errorText(err: unknown): string {
  if (err instanceof Error && err.message) {
    return err.message;
  }
  if (typeof err === "string" && err) {
    return err;
  }
  if (err && typeof err === "object") {
    const message = (err as { message?: unknown }).message;
    if (typeof message === "string" && message) {
      return message;
    }
    try {
      const json = JSON.stringify(err);
      if (json && json !== "{}") {
        return json;
      }
    } catch {
      // a cyclic object: fall through
    }
  }
  return err === undefined ? "no error details (see the 'Protege Server' output)" : String(err);
}

/** The last stderr line that says something (a traceback's last line is its error). */
export function lastStderrLine(lines: readonly string[]): string {
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = (lines[i] ?? "").trim();
    if (line) {
      return line;
    }
  }
  return "";
}

/**
 * What the user reads when the server cannot start: what failed, the server's own last stderr line,
 * and which setting to change, including where to set it in a remote window (the command runs on the
 * remote machine, so the local user setting does not apply there).
 */
export function startFailureMessage(err: unknown, stderr: readonly string[], command: string,
                                    remoteName: string | undefined): string {
  const text = errorText(err);
  const code = (err as { code?: unknown } | undefined)?.code;
  const notFound = code === "ENOENT" || /\bENOENT\b/.test(text);
  const parts = [`Protege could not start its language server (${text}).`];
  const line = lastStderrLine(stderr);
  if (line && !text.includes(line)) {
    parts.push(`The server said: ${line}`);
  }
  if (notFound) {
    parts.push(`'${command}' was not found: set protege.server.command to the full path of protege ` +
      "(for example <venv>/bin/protege).");
  } else {
    parts.push("Check protege.server.command and protege.server.args (the server is started as " +
      `'${command} serve').`);
  }
  if (remoteName) {
    parts.push(`This is a remote window (${remoteName}): the server runs on the remote machine, so set ` +
      "protege.server.command in the Remote settings or the workspace settings; the local user setting " +
      "does not apply there.");
  }
  return parts.join(" ");
}
