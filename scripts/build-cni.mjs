// Builds the `flannel` CNI plugin's two installable forms from cni-plugin/main.ts:
//   node scripts/build-cni.mjs        -> dist/cni/flannel: one CommonJS file with a node shebang (the script form)
//   node scripts/build-cni.mjs --sea  -> also dist/cni/flannel-sea: a Node single executable application that needs
//                                        no Node on the host (the form the DaemonSet installs)
// One CJS bundle serves both, because a SEA main must be CommonJS. dist/cni/package.json pins the directory to
// CommonJS so the extensionless file loads as CJS inside this "type": "module" package; copied to /opt/cni/bin it is
// CJS by default. Any bundling error fails the build (exit 1). Until the plugin source exists the step is skipped.
// Options for trying the build on another entry: --entry <file.ts> --outdir <dir>.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (flag) => {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const entry = resolve(root, arg('--entry') ?? 'cni-plugin/main.ts');
const outdir = resolve(root, arg('--outdir') ?? 'dist/cni');
const wantSea = process.argv.includes('--sea');
const bundle = join(outdir, 'flannel');
const seaBinary = join(outdir, 'flannel-sea');
// The sentinel Node's SEA loader looks for (docs: "Single executable applications", Node 20).
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

function fail(what, err) {
  process.stderr.write(`build-cni: ${what} FAILED${err ? `: ${err instanceof Error ? err.message : String(err)}` : ''}\n`);
  process.exit(1);
}

if (!existsSync(entry)) {
  process.stderr.write(`build-cni: ${entry} does not exist yet; skipping the flannel CNI plugin bundle (dist/cni/flannel)\n`);
  if (wantSea) fail('SEA build (no plugin source to build from)');
  process.exit(0);
}

let esbuild;
try {
  esbuild = await import('esbuild');
} catch (err) {
  fail('loading esbuild (run npm ci)', err);
}

const started = Date.now();
mkdirSync(outdir, { recursive: true });
writeFileSync(join(outdir, 'package.json'), '{ "type": "commonjs" }\n');
try {
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // esbuild keeps the entry's own hashbang; a second one from the banner would be a syntax error.
    ...(readFileSync(entry, 'utf8').startsWith('#!') ? {} : { banner: { js: '#!/usr/bin/env node' } }),
    minify: false,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'silent',
    metafile: false,
  });
  for (const w of result.warnings) process.stderr.write(`build-cni: warning: ${w.text}${w.location ? ` (${w.location.file}:${w.location.line})` : ''}\n`);
} catch (err) {
  const errors = err && typeof err === 'object' && 'errors' in err && Array.isArray(err.errors) ? err.errors : [];
  for (const e of errors) process.stderr.write(`build-cni: ${e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ` : ''}${e.text}\n`);
  fail(`bundling ${entry}`, errors.length ? undefined : err);
}
chmodSync(bundle, 0o755);
if (!readFileSync(bundle, 'utf8').startsWith('#!/usr/bin/env node\n')) fail(`${bundle} does not start with a node shebang`);
smokeTest(bundle);
process.stderr.write(`build-cni: ${bundle} (${Date.now() - started} ms)\n`);

if (wantSea) {
  const seaStarted = Date.now();
  const blob = join(outdir, 'flannel-sea.blob');
  const config = join(outdir, 'sea-config.json');
  writeFileSync(config, `${JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }, null, 2)}\n`);
  try {
    execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    rmSync(seaBinary, { force: true });
    copyFileSync(process.execPath, seaBinary);
    chmodSync(seaBinary, 0o755);
    const postject = join(root, 'node_modules', 'postject', 'dist', 'cli.js');
    execFileSync(process.execPath, [postject, seaBinary, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(seaBinary, { force: true });
    const stderr = err && typeof err === 'object' && 'stderr' in err ? String(err.stderr).trim() : '';
    fail('building the single executable application', stderr || err);
  } finally {
    rmSync(blob, { force: true });
    rmSync(config, { force: true });
  }
  // Without node on PATH: the SEA must stand alone (a wrong Node build or a bad fuse shows up here).
  smokeTest(seaBinary, '/nonexistent');
  process.stderr.write(`build-cni: ${seaBinary} (${Date.now() - seaStarted} ms)\n`);
}

/** The built form must run and answer VERSION with supportedVersions, or the build fails. */
function smokeTest(executable, pathEnv = `${dirname(process.execPath)}:/usr/bin:/bin`) {
  let out = '';
  try {
    out = execFileSync(executable, [], {
      env: { PATH: pathEnv, CNI_COMMAND: 'VERSION' },
      input: '{"cniVersion":"1.0.0"}',
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 10_000,
    }).toString();
    const answer = JSON.parse(out);
    if (!Array.isArray(answer.supportedVersions)) throw new Error('no supportedVersions in the answer');
  } catch (err) {
    const stdout = out || (err && typeof err === 'object' && 'stdout' in err ? String(err.stdout).trim() : '');
    const stderr = err && typeof err === 'object' && 'stderr' in err ? String(err.stderr).trim() : '';
    fail(`smoke test of ${executable} (CNI_COMMAND=VERSION)${stdout ? `; stdout: ${stdout}` : ''}${stderr ? `; stderr: ${stderr}` : ''}`, err);
  }
}
