/**
 * The kubelet's part, in the node lab, for a pod a test created through the test API server (a
 * lab pod with `fixture: false`: its network namespace stands for the pod sandbox):
 *
 *  - writes its projected ServiceAccount tokens as the kubelet does: one TokenRequest per
 *    `serviceAccountToken` source, with that source's audience and expirationSeconds, bound to
 *    the pod (name and uid), into a directory standing for the volume;
 *  - reports it Running with the lab pod's addresses (status.podIP/podIPs, as after the CNI);
 *  - runs a command as one of its containers: in the pod's network namespace, with the
 *    container's own env and its volumeMounts at their mountPath (bind mounts in a mount
 *    namespace of the command's own, so the host's filesystem is not touched).
 *
 * Only what token identity needs: other volume kinds, env `valueFrom` and `subPath` are refused,
 * loudly, rather than faked.
 */
import { existsSync, mkdirSync, mkdtempSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ExecResult, Lab, LabPod } from './lab.js';
import { ROOT } from './podiam-process.js';

type Obj = Record<string, any>;

/** A projected ServiceAccount token the kubelet wrote. */
export interface ProjectedToken {
  readonly volume: string;
  /** The file's path inside the volume (the source's `path`). */
  readonly path: string;
  readonly audience: string | undefined;
  readonly expirationSeconds: number;
  /** Where the lab wrote it (on the host). */
  readonly file: string;
}

export class LabKubeletPod {
  private constructor(
    private readonly lab: Lab,
    readonly labPod: LabPod,
    /** The pod as the API server holds it, Running. */
    readonly pod: Obj,
    /** Volume name -> its directory on the host, or why the lab cannot make it. */
    private readonly volumes: ReadonlyMap<string, { dir: string } | { refused: string }>,
    readonly tokens: readonly ProjectedToken[],
  ) {}

  /** Plays the kubelet for `created` (the API server's answer to the pod's POST). */
  static async start(lab: Lab, created: Obj): Promise<LabKubeletPod> {
    const name = String(created.metadata?.name);
    const namespace = String(created.metadata?.namespace);
    const labPod = lab.pod(name);
    if (labPod.fixture || labPod.namespace !== namespace) throw new Error(`lab pod ${name}: declare it { namespace: '${namespace}', fixture: false } to create it through the API`);
    if (created.spec?.nodeName !== labPod.node) throw new Error(`pod ${namespace}/${name}: spec.nodeName must be ${labPod.node} (the lab has no scheduler)`);

    const volumes = new Map<string, { dir: string } | { refused: string }>();
    const tokens: ProjectedToken[] = [];
    for (const volume of (created.spec.volumes ?? []) as Obj[]) {
      const sources = (volume.projected?.sources ?? []) as Obj[];
      const other = sources.find((s) => s.serviceAccountToken === undefined);
      if (volume.projected === undefined || other !== undefined) {
        volumes.set(volume.name, { refused: `volume ${volume.name}: the lab kubelet makes projected serviceAccountToken volumes only` });
        continue;
      }
      const dir = mkdtempSync(path.join(lab.dir, `volume-${name}-`));
      for (const { serviceAccountToken: source } of sources) {
        const expirationSeconds = (source.expirationSeconds as number | undefined) ?? 3600;
        const audience = source.audience as string | undefined;
        const file = path.join(dir, String(source.path));
        const token = await tokenRequest(lab, created, audience, expirationSeconds);
        mkdirSync(path.dirname(file), { recursive: true });
        writeFileSync(file, token, { mode: 0o644 });
        tokens.push({ volume: volume.name, path: String(source.path), audience, expirationSeconds, file });
      }
      volumes.set(volume.name, { dir });
    }

    const status = { phase: 'Running', podIP: labPod.ip, podIPs: [{ ip: labPod.ip }, { ip: labPod.ip6 }] };
    const r = await lab.kube('PATCH', `/api/v1/namespaces/${namespace}/pods/${name}/status`, { status }, 'application/merge-patch+json');
    if (r.status !== 200) throw new Error(`status of ${namespace}/${name}: HTTP ${r.status}: ${JSON.stringify(r.body)}`);
    return new LabKubeletPod(lab, labPod, r.body, volumes, tokens);
  }

  /** A container (or init container) of the pod, by name. */
  container(name: string): Obj {
    const c = [...((this.pod.spec.initContainers ?? []) as Obj[]), ...(this.pod.spec.containers as Obj[])].find((x) => x.name === name);
    if (c === undefined) throw new Error(`pod ${this.labPod.name} has no container ${name}`);
    return c;
  }

  /** The container's environment, as its spec gives it. */
  env(container: string): Record<string, string> {
    const env: Record<string, string> = {};
    for (const e of (this.container(container).env ?? []) as Obj[]) {
      if (e.valueFrom !== undefined) throw new Error(`env ${e.name}: valueFrom is not supported by the lab kubelet`);
      env[e.name] = (e.value as string | undefined) ?? '';
    }
    return env;
  }

  /**
   * Runs argv as `container` would: the pod's network namespace, a clean base environment
   * (Lab.cleanClientEnv()) plus the container's env, and its volume mounts at their mountPath.
   */
  exec(container: string, argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const env = { ...this.lab.cleanClientEnv(), ...this.env(container) };
    const mounts = ((this.container(container).volumeMounts ?? []) as Obj[]).map((m) => {
      const volume = this.volumes.get(m.name);
      if (volume === undefined) throw new Error(`mount of ${m.name}: the pod has no such volume`);
      if ('refused' in volume) throw new Error(volume.refused);
      if (m.subPath !== undefined) throw new Error(`mount of ${m.name}: subPath is not supported by the lab kubelet`);
      if (typeof m.mountPath !== 'string' || !path.isAbsolute(m.mountPath)) throw new Error(`mount of ${m.name}: mountPath ${String(m.mountPath)} is not absolute`);
      return { dir: volume.dir, mountPath: m.mountPath, readOnly: m.readOnly === true };
    });
    // A mountPath that does not exist on the host is made on a tmpfs laid over its nearest
    // existing ancestor, in this command's mount namespace only; nothing the command needs may
    // live under that ancestor.
    const needed = [this.lab.dir, ROOT, process.execPath, argv[0]!, ...mounts.map((m) => m.dir)];
    const hidden = new Set<string>();
    const script = ['set -e'];
    for (const m of mounts) {
      if (existsSync(m.mountPath) && statSync(m.mountPath).isDirectory()) continue;
      let ancestor = path.dirname(m.mountPath);
      while (!existsSync(ancestor)) ancestor = path.dirname(ancestor);
      const real = realpathSync(ancestor);
      const clash = needed.find((p) => existsSync(p) && (realpathSync(p) + '/').startsWith(real + '/'));
      if (real === '/' || clash !== undefined) throw new Error(`mount at ${m.mountPath}: cannot lay a tmpfs over ${real} (${clash ?? 'the root'} is needed)`);
      if (!hidden.has(real)) script.push(`mount -t tmpfs -o mode=0755 lab-kubelet ${quote(real)}`);
      hidden.add(real);
    }
    for (const m of mounts) {
      script.push(`mkdir -p ${quote(m.mountPath)}`, `mount --bind ${quote(m.dir)} ${quote(m.mountPath)}`);
      if (m.readOnly) script.push(`mount -o remount,bind,ro ${quote(m.mountPath)}`);
    }
    script.push('exec "$@"');
    return this.lab.exec(this.labPod.netns, ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script.join('\n'), 'lab-kubelet', ...argv], { env, timeoutMs: opts.timeoutMs ?? 30_000 });
  }
}

/** TokenRequest as the kubelet makes it for a projected volume: bound to the pod, by name and uid. */
async function tokenRequest(lab: Lab, pod: Obj, audience: string | undefined, expirationSeconds: number): Promise<string> {
  const serviceAccount = (pod.spec.serviceAccountName as string | undefined) ?? 'default';
  const body = {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { ...(audience === undefined ? {} : { audiences: [audience] }), expirationSeconds, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod.metadata.name, uid: pod.metadata.uid } },
  };
  const r = await lab.kube('POST', `/api/v1/namespaces/${pod.metadata.namespace}/serviceaccounts/${serviceAccount}/token`, body);
  const token = r.body.status?.token as string | undefined;
  if (r.status !== 201 || token === undefined) throw new Error(`TokenRequest for ${pod.metadata.namespace}/${pod.metadata.name}: HTTP ${r.status}: ${JSON.stringify(r.body)}`);
  return token;
}

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
