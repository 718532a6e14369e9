/**
 * The RolePolicy of a podiam started with kube2iam's defaults (the annotation keys, a base role
 * ARN, no namespace restrictions, glob patterns), for tests of role resolution; each test states
 * only what it changes.
 */
import type { RolePolicy } from '../../src/roles.js';

export const BASE_ROLE_ARN = 'arn:aws:iam::123456789012:role/';

export function rolePolicy(overrides: Partial<RolePolicy> = {}): RolePolicy {
  return {
    baseRoleArn: BASE_ROLE_ARN,
    defaultRole: undefined,
    roleKey: 'iam.amazonaws.com/role',
    externalIdKey: 'iam.amazonaws.com/external-id',
    sessionNameKey: 'iam.amazonaws.com/session-name',
    namespaceKey: 'iam.amazonaws.com/allowed-roles',
    namespaceRestrictions: false,
    namespaceRestrictionFormat: 'glob',
    ...overrides,
  };
}
