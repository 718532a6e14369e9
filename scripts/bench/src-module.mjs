/**
 * Loads one of podiam's pure source modules for an in-process micro-benchmark. The build keeps
 * only the bundle (dist/podiam.js), which exports nothing: the module is bundled on the fly with
 * the same esbuild, into a temporary file, and imported from there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export async function srcModule(relativePath) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-bench-'));
  const outfile = path.join(dir, 'module.mjs');
  try {
    await esbuild.build({ entryPoints: [path.join(ROOT, relativePath)], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node22', logLevel: 'warning', absWorkingDir: ROOT });
    return await import(pathToFileURL(outfile).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
