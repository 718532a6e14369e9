/**
 * Pure: allowed-roles regexps, as kube2iam matches them and as podiam's stricter mode does.
 * RE2 syntax (Go's regexp) through re2js: linear-time matching whatever the pattern, so a
 * pattern written by a namespace user cannot stall the event loop, and no heuristic is needed.
 */
import { RE2JS } from 're2js';

/** One allowed-roles entry, compiled. An entry that does not compile never matches (kube2iam skips it). */
export interface RegexpEntry {
  readonly entry: string;
  /** The compile error, when the entry is skipped. */
  readonly invalid: string | undefined;
  test(roleArn: string): boolean;
  /** True when the entry matches only as a substring: unanchored it matches, anchored it would not. */
  matchesOnlyUnanchored(roleArn: string): boolean;
}

/**
 * kube2iam's iam.RoleARN: an entry starting with "arn:" (any case) is taken as is, anything else
 * is appended to the base role ARN, verbatim (no escaping, no trimming).
 * https://github.com/jtblin/kube2iam/blob/0.15.0/iam/arn.go (RoleARN)
 */
export function kube2iamNormalize(entry: string, baseRoleArn: string | undefined): string {
  if (entry.toLowerCase().startsWith('arn:')) return entry;
  return (baseRoleArn ?? '') + entry;
}

/**
 * `anchored: false` is kube2iam's decision exactly: regexp.MatchString(normalized, roleArn), an
 * unanchored search, so "app" allows role/evil-app-admin and a relative "a|b" is (base a)|b.
 * https://github.com/jtblin/kube2iam/blob/0.15.0/mappings/mapper.go (checkRoleForNamespace)
 *
 * `anchored: true` (--namespace-restriction-format=regexp-anchored) is podiam's stricter reading:
 * a relative entry is the escaped base ARN followed by the entry as one group, and the whole
 * role ARN must match: ^(?:<base>(?:<entry>))$.
 */
export function compileRoleRegexp(entry: string, baseRoleArn: string | undefined, anchored: boolean): RegexpEntry {
  const unanchoredSource = kube2iamNormalize(entry, baseRoleArn);
  const relative = !entry.toLowerCase().startsWith('arn:') && baseRoleArn !== undefined;
  const anchoredSource = `^(?:${relative ? `${RE2JS.quote(baseRoleArn)}(?:${entry.replace(/^\/+/, '')})` : entry})$`;
  let search: RE2JS | undefined;
  let whole: RE2JS | undefined;
  let invalid: string | undefined;
  try {
    if (anchored) {
      // The entry must compile on its own first: then its parentheses balance, and wrapping it in
      // a group cannot be escaped ("a)|(.*" would otherwise allow every role).
      RE2JS.compile(entry);
      whole = RE2JS.compile(anchoredSource);
    } else {
      search = RE2JS.compile(unanchoredSource);
    }
  } catch (err) {
    invalid = (err as Error).message;
    search = undefined;
    whole = undefined;
  }
  if (anchored) {
    return {
      entry,
      invalid,
      test: (roleArn) => whole !== undefined && whole.matches(roleArn),
      matchesOnlyUnanchored: () => false,
    };
  }
  // Unanchored: the anchored twin only tells "matched only as a substring" for the warning. It is
  // the kube2iam source itself, anchored (not the escaped variant), so the two differ only in anchoring.
  let twin: RE2JS | undefined;
  if (search !== undefined) {
    try {
      twin = RE2JS.compile(`^(?:${unanchoredSource})$`);
    } catch {
      twin = undefined;
    }
  }
  return {
    entry,
    invalid,
    test: (roleArn) => search !== undefined && search.matcher(roleArn).find(),
    matchesOnlyUnanchored: (roleArn) => search !== undefined && search.matcher(roleArn).find() && !(twin?.matches(roleArn) ?? false),
  };
}
