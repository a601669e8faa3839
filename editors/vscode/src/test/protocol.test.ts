/** Tests of the pure helpers in protocol.ts (no VS Code needed). */

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  contributedKeys,
  errorText,
  explanationMarkdown,
  jsonToMarkdown,
  lastStderrLine,
  modelState,
  parseAddress,
  searchArguments,
  searchHits,
  searchPick,
  startFailureMessage,
  statusSummary,
  wireOptions,
} from "../protocol";

test("wireOptions nests dotted keys and keeps only defined server options", () => {
  const wire = wireOptions([
    ["model", "/models/student"],
    ["maxNewTokens", 64],
    ["index.enabled", false],
    ["index.chromaUrl", "http://127.0.0.1:8000"],
    ["screening.policy", { block: "HIGH" }],
    ["healing", undefined],
    ["server.command", "/venv/bin/protege"],
    ["trace.server", "verbose"],
  ]);
  assert.deepEqual(wire, {
    model: "/models/student",
    maxNewTokens: 64,
    index: { enabled: false, chromaUrl: "http://127.0.0.1:8000" },
    screening: { policy: { block: "HIGH" } },
  });
});

test("wireOptions keeps explicit nulls, which mean 'use the server default' on the wire", () => {
  assert.deepEqual(wireOptions([["model", null]]), { model: null });
  assert.deepEqual(wireOptions([]), {});
});

test("contributedKeys strips the section and ignores foreign settings", () => {
  const manifest = {
    contributes: { configuration: { properties: { "protege.model": {}, "protege.index.enabled": {}, "other.x": {} } } },
  };
  assert.deepEqual(contributedKeys(manifest), ["model", "index.enabled"]);
  assert.deepEqual(contributedKeys({}), []);
});

test("parseAddress accepts host:port and [v6]:port", () => {
  assert.deepEqual(parseAddress("127.0.0.1:2087"), { host: "127.0.0.1", port: 2087 });
  assert.deepEqual(parseAddress(" localhost:80 "), { host: "localhost", port: 80 });
  assert.deepEqual(parseAddress("[::1]:2087"), { host: "::1", port: 2087 });
});

test("parseAddress rejects malformed addresses with one sentence naming the setting", () => {
  for (const bad of ["2087", "host:", "host:0", "host:70000", "host:port", ""]) {
    assert.throws(() => parseAddress(bad), /protege\.server\.address must look like/);
  }
});

test("jsonToMarkdown renders nested replies as a list", () => {
  const md = jsonToMarkdown({ model: { path: "/m", state: "ready" }, cache: { hits: 3 }, empty: {}, tags: ["a"] });
  assert.equal(
    md,
    [
      "- **model**",
      "  - **path**: /m",
      "  - **state**: ready",
      "- **cache**",
      "  - **hits**: 3",
      "- **empty**",
      "  - (empty)",
      "- **tags**",
      "  - **0**: a",
    ].join("\n"),
  );
  assert.equal(jsonToMarkdown(null), "- null");
});

test("statusSummary names the model and device when the server reports them", () => {
  assert.equal(statusSummary({ model: { path: "/m/student", device: "cpu" } }), "Protege: model /m/student on cpu");
  assert.equal(statusSummary({ model: "/m", device: "cuda" }), "Protege: model /m on cuda");
  assert.equal(statusSummary({ version: "0.1.0" }), "Protege: running");
  assert.equal(statusSummary(undefined), "Protege: no status");
});

test("explanationMarkdown takes the markdown field or says why there is none", () => {
  assert.equal(explanationMarkdown({ markdown: "# f\nAdds." }), "# f\nAdds.");
  assert.equal(explanationMarkdown("plain"), "plain");
  assert.match(explanationMarkdown(null), /no explanation/);
});

test("searchHits keeps well-formed hits, best first", () => {
  const hits = searchHits([
    { path: "a.py", line: 3, symbol: "f", score: 0.2 },
    { path: "b.py", line: 7.9, score: 0.9 },
    { path: 3, line: 1 },
    null,
  ]);
  assert.deepEqual(hits, [
    { path: "b.py", line: 7, symbol: "", score: 0.9 },
    { path: "a.py", line: 3, symbol: "f", score: 0.2 },
  ]);
  assert.equal(searchHits({ results: [{ path: "c.py", line: 0 }] }).length, 1);
  assert.deepEqual(searchHits([{ path: "d.py", start_line: 4, symbol: "g", score: 1 }])[0]?.line, 4);
  assert.deepEqual(searchHits([{ path: "e.py", startLine: 5 }])[0]?.line, 5);
  assert.deepEqual(searchHits("nonsense"), []);
});

test("searchPick shows one-based lines, as editors do", () => {
  assert.deepEqual(searchPick({ path: "a.py", line: 0, symbol: "main", score: 0.5 }), {
    label: "main",
    description: "a.py:1  score 0.500",
  });
  assert.equal(searchPick({ path: "a.py", line: 9, symbol: "", score: 1 }).label, "a.py:10");
});

test("searchHits reads the server's index hits (start_line, uri)", () => {
  const reply = [
    { path: "pkg/m.py", start_line: 5, end_line: 7, symbol: "scale", kind: "function", language: "python",
      text: "def scale(...)", score: 0.03, uri: "file:///ws/pkg/m.py" },
  ];
  assert.deepEqual(searchHits(reply), [
    { path: "pkg/m.py", line: 5, symbol: "scale", score: 0.03, uri: "file:///ws/pkg/m.py" },
  ]);
});

test("searchArguments sends one object with the query and a hit count", () => {
  assert.deepEqual(searchArguments("parse config"), [{ query: "parse config", k: 20 }]);
  assert.deepEqual(searchArguments("x", 5), [{ query: "x", k: 5 }]);
});

test("errorText never says undefined", () => {
  assert.equal(errorText(new Error("boom")), "boom");
  assert.equal(errorText("plain"), "plain");
  assert.equal(errorText({ message: "from an object" }), "from an object");
  assert.equal(errorText({ code: 7 }), '{"code":7}');
  assert.ok(!errorText(undefined).includes("undefined"));
  assert.ok(!errorText({}).includes("undefined"));
});

test("startFailureMessage names the setting, the server's stderr and the remote scope", () => {
  const enoent = Object.assign(new Error("spawn protege ENOENT"), { code: "ENOENT" });
  const local = startFailureMessage(enoent, [], "protege", undefined);
  assert.match(local, /spawn protege ENOENT/);
  assert.match(local, /set protege\.server\.command to the full path/);
  assert.doesNotMatch(local, /remote window/);
  const remote = startFailureMessage(enoent, [], "protege", "ssh-remote");
  assert.match(remote, /remote window \(ssh-remote\).*Remote settings/);
  const crashed = startFailureMessage(new Error("Connection to server got closed."),
    ["Traceback (most recent call last):", "  File ...", "ModuleNotFoundError: No module named 'torch'", ""],
    "/venv/bin/protege", undefined);
  assert.match(crashed, /The server said: ModuleNotFoundError: No module named 'torch'/);
  assert.match(crashed, /protege\.server\.args/);
  assert.equal(lastStderrLine(["a", "  ", ""]), "a");
});

test("modelState reads the model's load state from a status reply", () => {
  assert.deepEqual(modelState({ model: { state: "ready" } }), { state: "ready" });
  assert.deepEqual(modelState({ model: { state: "unloaded" } }), { state: "loading" });
  assert.deepEqual(modelState({ model: { state: "loading" } }), { state: "loading" });
  assert.deepEqual(modelState({ model: { state: "error", error: "no weights" } }), { state: "error", error: "no weights" });
  assert.deepEqual(modelState({ model: { state: "error" } }), { state: "error" });
  assert.deepEqual(modelState({}), { state: "unknown" });
  assert.deepEqual(modelState(null), { state: "unknown" });
});
