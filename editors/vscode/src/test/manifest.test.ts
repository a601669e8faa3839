/**
 * The manifest (package.json) against the server it configures: every server option is a setting
 * with the server's default, every contributed command is registered, and no command id collides
 * with the ones vscode-languageclient registers for the server's own commands.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { CLIENT_ONLY_SETTINGS, contributedKeys, SECTION, SERVER_COMMANDS } from "../protocol";

const extensionRoot = resolve(__dirname, "..", "..");
const repoRoot = resolve(extensionRoot, "..", "..");
const manifest = JSON.parse(readFileSync(join(extensionRoot, "package.json"), "utf8"));
const properties: Record<string, { default?: unknown; enum?: unknown[] }> =
  manifest.contributes.configuration.properties;

interface ServerOption {
  name: string;
  default: unknown;
  enum: unknown[] | null;
}

// Asks the server's own config module, so a renamed or added option shows up here.
const DUMP_OPTIONS = `
import dataclasses, json, typing
from server.config import ProtegeConfig, camel, to_wire

def walk(cls, prefix, defaults):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], camel(f.name)
        if dataclasses.is_dataclass(tp):
            yield from walk(tp, prefix + name + ".", defaults[name])
        else:
            literal = typing.get_origin(tp) is typing.Literal
            yield {"name": prefix + name, "default": defaults[name],
                   "enum": list(typing.get_args(tp)) if literal else None}

print(json.dumps(list(walk(ProtegeConfig, "", to_wire(ProtegeConfig())))))
`;

function python(): string {
  if (process.env["PROTEGE_PYTHON"]) {
    return process.env["PROTEGE_PYTHON"];
  }
  const venv = join(repoRoot, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

function serverOptions(): ServerOption[] | undefined {
  if (!existsSync(join(repoRoot, "server", "config.py"))) {
    return undefined; // packaged outside the Protege repository: nothing to compare against
  }
  const out = execFileSync(python(), ["-c", DUMP_OPTIONS], { cwd: repoRoot, encoding: "utf8" });
  return JSON.parse(out) as ServerOption[];
}

test("every server option is a setting, and every setting is a server option or client-only", (t) => {
  const options = serverOptions();
  if (!options) {
    t.skip("server/config.py not found beside the extension");
    return;
  }
  const serverNames = options.map((o) => o.name).sort();
  const settingNames = contributedKeys(manifest)
    .filter((k) => !CLIENT_ONLY_SETTINGS.includes(k))
    .sort();
  const missing = serverNames.filter((n) => !settingNames.includes(n));
  const unknown = settingNames.filter((n) => !serverNames.includes(n));
  assert.deepEqual(missing, [], `server options without a protege.* setting in package.json: ${missing}`);
  assert.deepEqual(unknown, [], `settings the server does not know (typo or removed option): ${unknown}`);
});

test("setting defaults and choices are the server's", (t) => {
  const options = serverOptions();
  if (!options) {
    t.skip("server/config.py not found beside the extension");
    return;
  }
  for (const option of options) {
    const setting = properties[`${SECTION}.${option.name}`];
    assert.ok(setting, `no setting for ${option.name}`);
    assert.deepEqual(setting.default, option.default, `default of ${SECTION}.${option.name}`);
    if (option.enum) {
      assert.deepEqual(setting.enum, option.enum, `choices of ${SECTION}.${option.name}`);
    }
  }
});

test("client-only settings are contributed, including the trace setting the client reads", () => {
  for (const key of CLIENT_ONLY_SETTINGS) {
    assert.ok(properties[`${SECTION}.${key}`], `package.json lacks ${SECTION}.${key}`);
  }
  // vscode-languageclient reads `<client id>.trace.server`; the client id is SECTION.
  assert.deepEqual(properties[`${SECTION}.trace.server`]?.enum, ["off", "messages", "verbose"]);
});

test("every contributed command is registered and none collides with a server command", () => {
  const source = readFileSync(join(extensionRoot, "src", "extension.ts"), "utf8");
  const serverIds: string[] = Object.values(SERVER_COMMANDS);
  const commands: { command: string }[] = manifest.contributes.commands;
  assert.ok(commands.length >= 3);
  for (const { command } of commands) {
    assert.ok(source.includes(`registerCommand("${command}"`), `${command} is contributed but never registered`);
    // vscode-languageclient registers the server's executeCommand ids itself; a second one would fail.
    assert.ok(!serverIds.includes(command), `${command} collides with a server command`);
  }
  for (const menu of Object.values(manifest.contributes.menus) as { command: string }[][]) {
    for (const item of menu) {
      assert.ok(commands.some((c) => c.command === item.command), `menu item ${item.command} is not contributed`);
    }
  }
});

test("the pinned vscode-languageclient registers inline completion as a built-in feature", () => {
  // Ghost text depends on it: 9.x only had it among the proposed features.
  const client = readFileSync(require.resolve("vscode-languageclient/$test/common/client"), "utf8");
  assert.match(client, /registerFeature\(new \w+\.InlineCompletionItemFeature\(this\)\)/);
});
