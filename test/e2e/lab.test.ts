/**
 * The lab cleans up after itself: destroy() leaves no namespace and no process behind, and a lab
 * whose process died without cleaning up is removed by the next one, while a live lab of
 * another process is left alone.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { spawnSync } from 'node:child_process';
import { LAB_PREFIX, Lab, labNamespaces, labPrerequisites, removeLeftovers } from '../support/lab.js';

beforeAll(() => {
  const problem = labPrerequisites();
  if (problem) throw new Error(problem);
});

function ip(...args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A pid that is certainly not running any more. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

test('destroy() removes every namespace and process of the lab', async () => {
  const lab = await Lab.create({ pods: [{ name: 'one', role: 'r' }] });
  const namespaces = lab.namespaces;
  expect(namespaces).toHaveLength(4); // node, the pod, the outsider, the metadata service
  for (const ns of namespaces) expect(labNamespaces()).toContain(ns);
  const pids = [lab.nodeNs, lab.imdsNs].flatMap((ns) => ip('netns', 'pids', ns).trim().split('\n').filter(Boolean).map(Number));
  expect(pids.length).toBeGreaterThanOrEqual(3); // fake IMDS (in its namespace), Kubernetes test API, moto
  await lab.destroy();
  for (const ns of namespaces) expect(labNamespaces()).not.toContain(ns);
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
}, 60_000);

test("leftovers of a dead lab process are removed; a live process's lab is not", () => {
  const dead = `${LAB_PREFIX}-${deadPid()}-zz1-node`;
  // A "live" lab: pid 1 always exists and is never this process.
  const live = `${LAB_PREFIX}-1-zz1-node`;
  ip('netns', 'add', dead);
  ip('netns', 'add', live);
  try {
    const removed = removeLeftovers();
    expect(removed).toContain(dead);
    expect(removed).not.toContain(live);
    expect(labNamespaces()).not.toContain(dead);
    expect(labNamespaces()).toContain(live);
  } finally {
    spawnSync('ip', ['netns', 'del', dead]);
    spawnSync('ip', ['netns', 'del', live]);
  }
});
