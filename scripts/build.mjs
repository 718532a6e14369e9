#!/usr/bin/env node
/**
 * Builds THE artifact: dist/podiam.js, one ESM file with podiam and every dependency it loads
 * (esbuild, tree-shaken, Node 22, the image's). `npm start`, the package's bin, the image, the tests and the
 * bench all run this file; `tsc` only type-checks src/ and compiles the test support and scripts.
 *
 *   node scripts/build.mjs            # dist/podiam.js and dist/podiam.meta.json
 *   node scripts/build.mjs --analyze  # the same, then what each package weighs in the bundle
 *
 * Why one file: Node loads an unbundled ESM graph module by module (the Kubernetes client alone is
 * thousands of files), which costs seconds and tens of MB at every start on every node.
 *
 * Three things the bundler cannot see, told to it here (checked against the pinned
 * @kubernetes/client-node 1.4.0 and its node-fetch, and re-checked at every build):
 * - The generated API and models (dist/gen/) have no side effects at import: each module only
 *   declares classes. Marked so, everything podiam does not call (all of it but the few
 *   KubeConfig references) is dropped.
 * - ListWatch (dist/cache.js) uses the generated ObjectSerializer only to "serialize" its label
 *   and field selectors as type 'string', which returns the value unchanged; the serializer's type
 *   map references every model. The shim below does the same for 'string' and refuses any other
 *   type, so a future ListWatch that needs more fails loudly instead of silently.
 * - node-fetch 2 (used by KubeConfig and Watch) takes its URL class from `Url.URL ||
 *   whatwgUrl.URL`: Node's own always exists, so the whatwg-url package (and the tr46 Unicode
 *   table it builds at load, ~5 MB of RSS) is never used. It is replaced by Node's URL.
 */
import { readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ENTRY = path.join(ROOT, 'src/cli.ts');
export const OUTFILE = path.join(ROOT, 'dist/podiam.js');

/**
 * V8 settings for a small long-lived server, in the shebang (the bin) and in the image's
 * ENTRYPOINT (the Dockerfile test checks they match). Measured in BENCHMARKS.md (footprint):
 * - --max-semi-space-size=2: the young generation's semi-spaces grow to 2 MB instead of 16 MB
 *   (Node 20's default). Under a minute of load from 110 pods the young generation holds 4.2 MB
 *   instead of 8.4 at 4 MB (and ~30 at the default), at the same CPU per request on a quiet
 *   machine: podiam's requests are short, so few objects outlive a 2 MB scavenge.
 * - --max-old-space-size=192: a ceiling with margin over the largest measured heap (10,000 pods
 *   watched cluster-wide), and under the DaemonSet's 256Mi memory limit with room for the rest of
 *   the process (~45 MB of runtime and code, the young generation): near it V8 collects harder,
 *   and past it the process dies and is restarted, before the kernel's OOM killer would.
 * - --no-allocation-site-pretenuring: V8 allocates straight into the old generation at the sites
 *   whose objects survived a scavenge in bulk. A burst at start-up (the pods' first answers, a
 *   list decoded) can tenure the HTTP request objects' sites, and from then on every request's
 *   objects land in the old space and die there: a mark-compact every ~200 ms under load. Measured
 *   on Node 22 (BENCHMARKS.md, "Pretenuring"): 39 -> 28 µs user CPU a cached request, 27 -> 1
 *   mark-compacts in 5 s, and less RSS, not more.
 */
export const NODE_FLAGS = ['--max-semi-space-size=2', '--max-old-space-size=192', '--no-allocation-site-pretenuring'];

/**
 * The environment the process starts with, also in the shebang (env -S takes NAME=VALUE before
 * the command) and in the image's ENV (the Dockerfile test checks they match):
 * - MALLOC_ARENA_MAX=2: glibc gives each thread that mallocs its own arena (up to 8 per CPU), and
 *   V8's GC helper threads and libuv's pool all malloc; two arenas held RSS 2-4 MB lower under
 *   load in the footprint runs, at no measurable CPU cost (podiam's own work is on one thread).
 */
export const PROCESS_ENV = { MALLOC_ARENA_MAX: '2' };

// The real path: esbuild reports importers by their real path (node_modules may be a link).
const KUBE = realpathSync(path.join(ROOT, 'node_modules/@kubernetes/client-node'));
const KUBE_VERSION = '1.4.0';

/** The generated Kubernetes API/models: side-effect free at import (see above). */
const kubeGeneratedIsPure = {
  name: 'kube-generated-is-pure',
  setup(build) {
    build.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData === 'resolving' || !args.importer.startsWith(`${KUBE}/dist/`)) return undefined;
      const r = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: 'resolving' });
      if (r.errors.length > 0) return { errors: r.errors };
      if (!r.path.startsWith(`${KUBE}/dist/gen/`)) return { path: r.path, external: r.external, namespace: r.namespace, sideEffects: r.sideEffects };
      return { path: r.path, sideEffects: false };
    });
  },
};

/** ListWatch's selector "serialization" without the generated serializer (see above). */
const listWatchSerializer = {
  name: 'list-watch-serializer',
  setup(build) {
    build.onResolve({ filter: /^\.\/serializer\.js$/ }, (args) => (args.importer === `${KUBE}/dist/cache.js` ? { path: 'list-watch-serializer', namespace: 'podiam-shim' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'podiam-shim' }, (args) => ({ loader: 'js', contents: SHIMS[args.path] }));
  },
};

/** node-fetch's whatwg-url import, answered with Node's own URL (see above). */
/**
 * Node's builtins, as podiam's own modules import them (`import http from 'node:http'`), taken with
 * process.getBuiltinModule() instead of an ESM import. On Node 22 an ESM import of a builtin builds
 * its ESM facade, which reads every export: node:http's lazy WebSocket, CloseEvent and MessageEvent
 * getters then load undici, and with it tls, http2, worker_threads, zlib, perf_hooks: 116 internal
 * modules instead of 45 for `import http from 'node:http'` alone, ~5 MB more of the node binary
 * resident (measured with /proc/self/smaps) and their heap, on every node. The module made here
 * exports the default and the names that are plain values at build time (never a getter, so
 * nothing lazy is loaded), plus the getters in GETTERS; importing any other name fails the build
 * ("No matching export"): add it to GETTERS, as a function called through (still lazy) or a value.
 */
const builtinsWithoutFacade = {
  name: 'builtins-without-facade',
  setup(b) {
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) => {
      if (args.kind !== 'import-statement' && args.kind !== 'dynamic-import') return undefined;
      const name = args.path.replace(/^node:/, '');
      return isBuiltin(name) && !name.startsWith('_') ? { path: name, namespace: 'podiam-builtin' } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: 'podiam-builtin' }, (args) => {
      const id = `node:${args.path}`;
      const descriptors = Object.getOwnPropertyDescriptors(process.getBuiltinModule(id));
      const names = Object.entries(descriptors)
        .filter(([name, d]) => d.get === undefined && /^[A-Za-z_$][\w$]*$/.test(name) && !RESERVED.has(name))
        .map(([name]) => name);
      const getters = Object.entries(GETTERS[args.path] ?? {}).map(([name, how]) =>
        how === 'call' ? `export function ${name}(...args) { return m.${name}(...args); }` : `export const ${name} = m.${name};`,
      );
      return { contents: [`const m = process.getBuiltinModule(${JSON.stringify(id)});`, 'export default m;', `export const { ${names.join(', ')} } = m;`, ...getters, ''].join('\n'), loader: 'js' };
    });
  },
};
/** Lazy getters of builtins that bundled code imports by name: 'call' stays lazy (a function called through), 'value' is read at load. */
const GETTERS = {
  fs: { ReadStream: 'value' }, // @smithy (the STS client's chunk): \`instanceof ReadStream\`; internal/fs/streams, which http loads anyway
  crypto: { getRandomValues: 'call' }, // @smithy: webcrypto, loaded only if called
  util: { aborted: 'call' }, // execa
};
const RESERVED = new Set(['default', 'delete', 'new', 'class', 'function', 'import', 'export', 'return', 'var', 'let', 'const', 'in', 'of', 'do', 'if', 'for', 'while', 'with', 'switch', 'case', 'break', 'continue', 'try', 'catch', 'finally', 'throw', 'typeof', 'instanceof', 'void', 'this', 'super', 'null', 'true', 'false', 'enum', 'await', 'yield', 'static', 'extends', 'debugger']);

const nodeFetchUrl = {
  name: 'node-fetch-url',
  setup(build) {
    build.onResolve({ filter: /^whatwg-url$/ }, (args) => (args.importer.includes('/node_modules/node-fetch/') ? { path: 'whatwg-url', namespace: 'podiam-shim' } : undefined));
  },
};

/** The parts that must stay off the start path, each loaded with import() where it is first used. */
export const LAZY = [
  [/(^|\/)node_modules\/@aws-sdk\/client-sts\//, 'the AWS SDK: loaded by src/aws/sts.ts while the informers list and the listener binds'],
  [/(^|\/)node_modules\/execa\//, 'execa: only with --iptables, --token-interface or --cleanup'],
  [/^src\/webhook\//, 'the webhook: only for `podiam webhook`'],
  [/^src\/broker\//, 'the broker: only for `podiam broker`'],
  [/^src\/token\//, 'the token path: only with --token-identity'],
];

/** The output files every start reads (the entry and its static imports), and their inputs. */
export function startPath(metafile, outfile = OUTFILE) {
  const outputs = metafile.outputs;
  const entry = path.relative(ROOT, outfile);
  const files = new Set();
  const walk = (file) => {
    if (files.has(file) || outputs[file] === undefined) return;
    files.add(file);
    for (const i of outputs[file].imports) if (i.kind === 'import-statement') walk(i.path);
  };
  walk(entry);
  const inputs = [...files].flatMap((file) => Object.keys(outputs[file].inputs));
  return { files: [...files], bytes: [...files].reduce((n, file) => n + outputs[file].bytes, 0), inputs };
}

/** The shims' contents, by path in the podiam-shim namespace. */
const SHIMS = {
  'list-watch-serializer': `export const ObjectSerializer = {
  serialize(value, type) {
    if (type !== 'string') throw new Error('podiam bundle: ListWatch serializer shim handles type string only, not ' + type);
    return value;
  },
};`,
  'whatwg-url': 'export const URL = globalThis.URL; export default { URL };',
};

function checkNodeFetch() {
  const dir = realpathSync(path.join(ROOT, 'node_modules/node-fetch'));
  for (const file of ['lib/index.js', 'lib/index.mjs']) {
    const code = readFileSync(path.join(dir, file), 'utf8');
    const uses = code.match(/whatwgUrl\.\w+/g) ?? [];
    const guarded = code.match(/Url\.URL \|\| whatwgUrl\.URL/g) ?? [];
    if (uses.length !== guarded.length) throw new Error(`node-fetch ${file} uses whatwg-url beyond the Url.URL fallback: re-check the note at the top`);
  }
}

function checkKubeClient() {
  const pkg = JSON.parse(readFileSync(path.join(KUBE, 'package.json'), 'utf8'));
  if (pkg.version !== KUBE_VERSION) throw new Error(`scripts/build.mjs was checked against @kubernetes/client-node ${KUBE_VERSION}, found ${pkg.version}: re-check the two notes at the top`);
  const cache = readFileSync(path.join(KUBE, 'dist/cache.js'), 'utf8');
  const uses = cache.match(/ObjectSerializer\.\w+\([^)]*\)/g) ?? [];
  if (uses.length === 0 || uses.some((u) => !/^ObjectSerializer\.serialize\(this\.(label|field)Selector, 'string'\)$/.test(u))) {
    throw new Error(`ListWatch uses the serializer in a way the shim does not cover: ${uses.join('; ')}`);
  }
}

/**
 * Bundles `entry` (podiam's CLI unless told otherwise) into `outfile` and its chunks. The floor
 * bench (scripts/bench/floor.mjs) bundles its own entry the same way, so the two load their
 * dependencies alike; the lazy-chunk check is podiam's, and only runs for podiam's entry.
 */
export async function build({ analyze = false, entry = ENTRY, outfile = OUTFILE } = {}) {
  checkKubeClient();
  checkNodeFetch();
  const result = await esbuild.build({
    entryPoints: { [path.basename(outfile, '.js')]: entry },
    outdir: path.dirname(outfile),
    // What is not on every start's path (the webhook, token identity, the STS client, the process
    // runner) is its own chunk, read and compiled only when first imported.
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    treeShaking: true,
    // Identifiers and whitespace only: function names stay readable in stack traces and profiles.
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    plugins: [builtinsWithoutFacade, kubeGeneratedIsPure, listWatchSerializer, nodeFetchUrl],
    banner: {
      // The CommonJS dependencies (winston, prom-client, http-proxy, ...) require() Node's builtins.
      js: ["import { createRequire as __podiamCreateRequire } from 'node:module';", 'const require = __podiamCreateRequire(import.meta.url);'].join('\n'),
    },
  });
  // The shebang carries the environment and the V8 flags (env -S splits them). esbuild keeps src/cli.ts's own
  // `#!/usr/bin/env node` as line 1: replaced in place, so the source map's lines still match.
  const code = readFileSync(outfile, 'utf8');
  const shebang = `#!/usr/bin/env -S ${Object.entries(PROCESS_ENV).map(([k, v]) => `${k}=${v} `).join('')}node ${NODE_FLAGS.join(' ')}`;
  writeFileSync(outfile, code.startsWith('#!') ? shebang + code.slice(code.indexOf('\n')) : `${shebang}\n${code}`);
  writeFileSync(outfile.replace(/\.js$/, '.meta.json'), JSON.stringify(result.metafile));
  // The two notes at the top took effect: no generated model is in the bundle (any of its files).
  const inputs = Object.entries(result.metafile.outputs)
    .filter(([file]) => file.endsWith('.js'))
    .flatMap(([, out]) => Object.entries(out.inputs));
  const models = inputs.filter(([file, v]) => file.includes('/client-node/dist/gen/models/') && v.bytesInOutput > 0);
  if (models.length > 0) throw new Error(`the bundle holds ${models.length} generated Kubernetes models (e.g. ${models[0][0]}): something imports them`);
  const unwanted = inputs.map(([file]) => file).filter((file) => /\/node_modules\/(whatwg-url|tr46)\//.test(file));
  if (unwanted.length > 0) throw new Error(`the bundle holds ${unwanted[0]}: the node-fetch URL shim did not apply`);
  // What every start reads (dist/podiam.js and the chunks it imports statically) holds none of the
  // lazy parts: a static import of one of them would put it back on every node's start.
  const onStart = startPath(result.metafile, outfile);
  for (const [file, why] of entry === ENTRY ? LAZY : []) {
    const found = onStart.inputs.find((input) => file.test(input));
    if (found !== undefined) throw new Error(`${found} is on the start path (${why}): import it with import() where it is used`);
  }
  if (analyze) process.stdout.write(await esbuild.analyzeMetafile(result.metafile, { verbose: false }));
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { chmodSync } = await import('node:fs');
  // tsc (run first by npm run build) compiles the test support and scripts, and with them the
  // parts of src/ they reach; that copy of src/ is neither shipped nor run: only the bundle is.
  rmSync(path.join(ROOT, 'dist/src'), { recursive: true, force: true });
  rmSync(path.join(ROOT, 'dist/chunks'), { recursive: true, force: true });
  const result = await build({ analyze: process.argv.includes('--analyze') });
  chmodSync(OUTFILE, 0o755);
  const onStart = startPath(result.metafile);
  const all = Object.entries(result.metafile.outputs).filter(([file]) => file.endsWith('.js'));
  const kb = (n) => Math.round(n / 1024);
  process.stdout.write(`built ${path.relative(ROOT, OUTFILE)}: ${kb(onStart.bytes)} KB read at every start (${onStart.files.length} files), ${kb(all.reduce((n, [, o]) => n + o.bytes, 0) - onStart.bytes)} KB in lazy chunks (${all.length - onStart.files.length} files)\n`);
}
