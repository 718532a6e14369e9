/**
 * Who writes a PodIdentityAssociation's status, and when. Standalone, every node's agent sees the
 * same association, namespace and flags, so every node computes the same verdict (the messages
 * name no node). Each writes only when the status the API server holds differs from its verdict,
 * after a random delay of up to `maxDelayMs`, checked again against the latest copy the informer
 * has: the first node's write reaches the others through their watch, and they find nothing to
 * do. A write is a merge patch of the status subresource: the same verdict written twice changes
 * nothing (the API server drops a no-op update). With a broker, the broker alone runs this.
 */
import { InvalidAssociation, RoleNotAllowed } from '../errors.js';
import type { AssociationInfo, NamespaceInfo } from '../roles.js';
import type { AcceptedCondition, AssociationIndex, StoredAssociation } from './association-index.js';
import { ASSOCIATIONS_PATH } from './association-index.js';

/** Accepted, or why not: InvalidArn, DeniedByNamespaceRestrictions, Conflict (another association has the ServiceAccount). */
export type AcceptedReason = 'Accepted' | 'InvalidArn' | 'DeniedByNamespaceRestrictions' | 'Conflict';

export function verdictOf(stored: StoredAssociation, index: AssociationIndex, check: (association: AssociationInfo) => Error | undefined): AcceptedCondition {
  const at = (status: 'True' | 'False', reason: AcceptedReason, message: string): AcceptedCondition => ({ status, reason, message, observedGeneration: stored.generation });
  const winner = index.supersededBy(stored);
  if (winner !== undefined) return at('False', 'Conflict', `podidentityassociation ${winner.info.name} (older) already gives ${stored.info.namespace}/${stored.info.serviceAccount} its role`);
  const err = check(stored.info);
  if (err === undefined) {
    const role = stored.info.targetRoleArn === undefined ? stored.info.roleArn : `${stored.info.targetRoleArn} through ${stored.info.roleArn}`;
    return at('True', 'Accepted', `pods of serviceaccount ${stored.info.namespace}/${stored.info.serviceAccount} get role ${role}`);
  }
  if (err instanceof InvalidAssociation) return at('False', 'InvalidArn', err.message);
  if (err instanceof RoleNotAllowed) return at('False', 'DeniedByNamespaceRestrictions', err.message);
  // A namespace annotation podiam cannot read denies too (BadAnnotation).
  return at('False', 'DeniedByNamespaceRestrictions', err.message);
}

const same = (a: AcceptedCondition | undefined, b: AcceptedCondition): boolean =>
  a !== undefined && a.status === b.status && a.reason === b.reason && a.message === b.message && a.observedGeneration === b.observedGeneration;

export interface StatusWriterOptions {
  readonly index: AssociationIndex;
  readonly namespace: (name: string) => NamespaceInfo | undefined;
  readonly check: (association: AssociationInfo, namespace: NamespaceInfo | undefined) => Error | undefined;
  /**
   * Whether this writer can decide the association's verdict: an agent that watches only its own
   * pods' namespaces cannot judge namespace restrictions elsewhere, and leaves that to a node that can.
   */
  readonly decides?: (association: AssociationInfo) => boolean;
  readonly patch: (path: string, body: unknown) => Promise<unknown>;
  readonly warn: (message: string, fields: Record<string, unknown>) => void;
  readonly maxDelayMs?: number;
  readonly random?: () => number;
}

export class AssociationStatusWriter {
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private stopped = false;
  private enabled = false;

  constructor(private readonly options: StatusWriterOptions) {}

  /** Verdicts need the namespaces: nothing is written until every informer has listed. */
  enable(): void {
    this.enabled = true;
    this.reconcileAll();
  }

  /** Look at every association (after a sync, or a namespace changed). */
  reconcileAll(): void {
    for (const s of this.options.index.all()) this.reconcile(s.info.name);
  }

  /** Look at one association soon: write its verdict if the API server holds another. */
  reconcile(name: string): void {
    if (!this.enabled || this.stopped || this.pending.has(name) || !this.differs(name)) return;
    const delay = Math.round((this.options.maxDelayMs ?? 2000) * (this.options.random ?? Math.random)());
    const timer = setTimeout(() => {
      this.pending.delete(name);
      void this.write(name);
    }, delay);
    timer.unref();
    this.pending.set(name, timer);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
  }

  private verdict(stored: StoredAssociation): AcceptedCondition {
    return verdictOf(stored, this.options.index, (a) => this.options.check(a, this.options.namespace(a.namespace)));
  }

  private differs(name: string): boolean {
    const stored = this.options.index.get(name);
    return stored !== undefined && this.options.decides?.(stored.info) !== false && !same(stored.accepted, this.verdict(stored));
  }

  private async write(name: string): Promise<void> {
    // Checked again: another node may have written the same verdict meanwhile.
    const stored = this.options.index.get(name);
    if (this.stopped || stored === undefined || this.options.decides?.(stored.info) === false) return;
    const verdict = this.verdict(stored);
    if (same(stored.accepted, verdict)) return;
    const lastTransitionTime = stored.accepted?.status === verdict.status && stored.accepted.lastTransitionTime ? stored.accepted.lastTransitionTime : new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const body = { status: { observedGeneration: verdict.observedGeneration, conditions: [{ type: 'Accepted', ...verdict, lastTransitionTime }] } };
    try {
      await this.options.patch(`${ASSOCIATIONS_PATH}/${encodeURIComponent(name)}/status`, body);
    } catch (err) {
      this.options.warn('could not write a PodIdentityAssociation status', { association: name, reason: verdict.reason, error: (err as Error).message });
    }
  }
}
