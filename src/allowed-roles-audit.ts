/**
 * Tells operators about allowed-roles regexps that kube2iam's semantics make surprising, at start
 * and on every namespace change: entries that do not compile (skipped: log, metric, an Event on
 * the namespace) and, in unanchored regexp mode, entries that allow a role in use on this node only
 * because the match is unanchored ("app" allows role/app-admin), so they can be tightened.
 * Each finding is reported once per (namespace, entry[, role]).
 */
import type { NamespaceInfo, RolePolicy } from './roles.js';
import type { RegexpEntry } from './role-patterns.js';
import { compileRoleRegexp } from './role-patterns.js';

export interface AuditSinks {
  warn(message: string, fields: Record<string, unknown>): void;
  invalidEntry(namespace: string): void;
  unanchoredMatch(namespace: string): void;
  namespaceEvent?(namespace: string, reason: string, message: string): void;
}

/** Findings remembered, so a namespace that changes often does not repeat itself; beyond this, forget all. */
const MAX_REPORTED = 10_000;

export class AllowedRolesAudit {
  private readonly compiled = new WeakMap<NamespaceInfo, RegexpEntry[]>();
  private readonly reported = new Set<string>();

  constructor(
    private readonly policy: RolePolicy,
    private readonly sinks: AuditSinks,
  ) {}

  get active(): boolean {
    return this.policy.namespaceRestrictions && this.policy.namespaceRestrictionFormat !== 'glob';
  }

  /** A namespace was added or changed; `rolesInUse` are the role ARNs its pods on this node are allowed. */
  check(ns: NamespaceInfo, rolesInUse: Iterable<string>): void {
    if (!this.active) return;
    const entries = this.entries(ns);
    const key = this.policy.namespaceKey;
    for (const e of entries) {
      if (e.invalid === undefined) continue;
      if (!this.once(`invalid\n${ns.name}\n${e.entry}`)) continue;
      const message = `allowed-roles entry ${JSON.stringify(e.entry)} in annotation ${key} is not a valid RE2 regexp and is skipped (the other entries still apply): ${e.invalid}`;
      this.sinks.warn('allowed-roles entry skipped', { namespace: ns.name, entry: e.entry, error: e.invalid });
      this.sinks.invalidEntry(ns.name);
      this.sinks.namespaceEvent?.(ns.name, 'InvalidAllowedRole', message);
    }
    if (this.policy.namespaceRestrictionFormat !== 'regexp') return;
    for (const roleArn of rolesInUse) {
      for (const e of entries) {
        if (!e.matchesOnlyUnanchored(roleArn)) continue;
        if (!this.once(`unanchored\n${ns.name}\n${e.entry}\n${roleArn}`)) continue;
        this.sinks.warn('allowed-roles entry matches only because kube2iam regexps are unanchored', {
          namespace: ns.name,
          entry: e.entry,
          roleArn,
          hint: 'anchor the entry (e.g. "^arn:...:role/name$" as a full ARN) or use --namespace-restriction-format=regexp-anchored',
        });
        this.sinks.unanchoredMatch(ns.name);
      }
    }
  }

  private entries(ns: NamespaceInfo): RegexpEntry[] {
    let entries = this.compiled.get(ns);
    if (entries !== undefined) return entries;
    entries = [];
    const raw = ns.annotations[this.policy.namespaceKey];
    let list: unknown;
    try {
      list = raw === undefined ? [] : JSON.parse(raw);
    } catch {
      list = [];
    }
    if (Array.isArray(list)) {
      const anchored = this.policy.namespaceRestrictionFormat === 'regexp-anchored';
      for (const entry of list) if (typeof entry === 'string') entries.push(compileRoleRegexp(entry, this.policy.baseRoleArn, anchored));
    }
    this.compiled.set(ns, entries);
    return entries;
  }

  private once(key: string): boolean {
    if (this.reported.has(key)) return false;
    if (this.reported.size >= MAX_REPORTED) this.reported.clear();
    this.reported.add(key);
    return true;
  }
}
