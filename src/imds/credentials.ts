/**
 * The security-credentials routes: who is calling (source IP -> pod), which role it may have,
 * and its credentials from the credential source. Reads top-down, as a request flows.
 */
import type { CredentialSource, PodCredentials } from '../credentials/source.js';
import { PodNotFound, RoleMismatch, StsUnavailable } from '../errors.js';
import type { PodInfo, RoleRequest } from '../roles.js';
import { podRef } from '../roles.js';
import { renderIamInfo } from './format.js';

export interface PodDirectory {
  /** The informers an answer (for this pod) depends on are in sync, or out of sync for less than --watch-deadline. */
  synced(pod?: PodInfo): boolean;
  /** Waits up to `ms` until synced(pod), else throws NotReady naming the informer. */
  ready(ms: number, pod?: PodInfo): Promise<void>;
  lookup(podIp: string): PodInfo | undefined;
  waitFor(podIp: string, ms: number): Promise<PodInfo | undefined>;
}

const BY_IP = Object.freeze({ kind: 'ip' as const });

export interface CredentialRoutesOptions {
  readonly pods: PodDirectory;
  /** The pod's role and credentials: this node's cache over STS, or the broker. */
  readonly source: CredentialSource;
  readonly podWaitMs: number;
  readonly onPodWait?: (outcome: 'found' | 'timeout') => void;
  /** A denial that the pod's owner should hear about (Kubernetes Event). */
  readonly onDenied?: (pod: PodInfo, err: Error) => void;
}

export interface CredentialAnswer {
  readonly pod: PodInfo;
  readonly role: RoleRequest;
  readonly body: Buffer;
}

export class CredentialRoutes {
  constructor(private readonly options: CredentialRoutesOptions) {}

  /** GET .../security-credentials/ -> the pod's role name. */
  async roleName(podIp: string): Promise<string> {
    const pod = await this.podFor(podIp);
    return (await this.roleOf(pod)).roleName;
  }

  /** GET .../security-credentials/<role> -> EC2-exact JSON, only for the pod's own role. */
  async credentials(podIp: string, askedRole: string): Promise<CredentialAnswer> {
    const pod = await this.podFor(podIp);
    const role = await this.roleOf(pod);
    if (askedRole !== role.roleName) throw this.denied(pod, new RoleMismatch(podRef(pod), askedRole, role.roleName));
    const { creds } = await this.credentialsOf(pod);
    return { pod, role, body: creds.body };
  }

  /**
   * The common case answered synchronously: a known pod asking for its own role, whose
   * credentials are fresh in memory. Anything else (unknown pod, denial, miss) is undefined,
   * and the caller takes the full path above, which answers it and reports any denial.
   */
  credentialsNow(podIp: string, askedRole: string): CredentialAnswer | undefined {
    const { pods, source } = this.options;
    const pod = pods.lookup(podIp);
    if (pod === undefined || !pods.synced(pod)) return undefined;
    const fresh = source.peek(pod);
    if (fresh === undefined || fresh.role.roleName !== askedRole) return undefined;
    return { pod, role: fresh.role, body: fresh.creds.body };
  }

  /** GET .../iam/info -> the pod's role in EC2's iam/info shape, never the node's profile. */
  async iamInfo(podIp: string): Promise<Buffer> {
    const pod = await this.podFor(podIp);
    await this.roleOf(pod);
    const { role, creds } = await this.credentialsOf(pod);
    return renderIamInfo(role.roleArn, creds.issuedMs);
  }

  /** From the source; STS refusing the role (RoleNotTrusted, RoleInvalid) is a denial the pod's owner hears about. */
  private async credentialsOf(pod: PodInfo): Promise<PodCredentials> {
    try {
      return await this.options.source.credentials(pod, BY_IP);
    } catch (err) {
      if (err instanceof StsUnavailable && err.status === 403) throw this.denied(pod, err);
      throw err;
    }
  }

  private async podFor(podIp: string): Promise<PodInfo> {
    const { pods, podWaitMs, onPodWait } = this.options;
    const deadline = performance.now() + podWaitMs;
    const left = (): number => Math.max(0, deadline - performance.now());
    // Start-up holds: before the first sync the request waits for it (within --pod-wait).
    await pods.ready(podWaitMs);
    let pod = await pods.waitFor(podIp, 0);
    if (pod === undefined) {
      // Pod-start race: the SDK can ask before the watch event arrives (kube2iam #136).
      pod = await pods.waitFor(podIp, left());
      onPodWait?.(pod === undefined ? 'timeout' : 'found');
      if (pod === undefined) throw new PodNotFound(podIp, podWaitMs);
    }
    // Its namespace's and ServiceAccount's informers, in sync (or waited for, in what is left).
    await pods.ready(left(), pod);
    return pod;
  }

  /** The pod's role; a denial is one the pod's owner hears about. */
  private async roleOf(pod: PodInfo): Promise<RoleRequest> {
    try {
      return await this.options.source.role(pod);
    } catch (err) {
      throw this.denied(pod, err as Error);
    }
  }

  private denied(pod: PodInfo, err: Error): Error {
    this.options.onDenied?.(pod, err);
    return err;
  }
}
