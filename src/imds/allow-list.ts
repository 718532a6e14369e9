/**
 * Security-relevant: what podiam accepts at all, by method and path, decided before any routing.
 * Everything not listed here is refused (400 for a path outside EC2's grammar, 405 for a method)
 * and never reaches the real metadata service.
 *
 * Why an allow-list: the review found paths that EC2 might read differently from podiam
 * (`iam;/`, `iam%20/`, `iam./`, `/latest./`, `/meta-data/` without a version, `pkcs7;`) and a
 * token PUT spelled with a trailing slash that went to the generic proxy and came back with a
 * real, node-wide token. Whatever EC2 does with such spellings, none of them reaches it now.
 */
import { BadRequest } from '../errors.js';

/** What a path is, for the method check and for routing. */
export type PathKind =
  /** `PUT /latest/api/token`: podiam's own token route. */
  | 'token'
  /** A path of EC2's grammar: the credential routes podiam answers, or forwarded (GET/HEAD only). */
  | 'metadata'
  /** podiam's own endpoints: /healthz, /readyz, /metrics, /debug/store. */
  | 'local';

const LOCAL_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/metrics', '/debug/store']);

/** The one token route, exact: EC2 answers 403 to a PUT on a dated version, podiam 405 to every other spelling. */
export const TOKEN_PATH = '/latest/api/token';
const DATED_TOKEN_PATH = /^\/(?:1\.0|\d{4}-\d{2}-\d{2})\/api\/token$/;

/**
 * EC2's path grammar (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html):
 * a version (`latest`, `1.0` or a date), then segments of letters, digits, `-`, `_`, `.` and `:`
 * (`:` for `network/interfaces/macs/0e:49:61:0f:c3:11/`), never `.` alone or as the last
 * character of a segment (`iam.`, `..`), and an optional trailing `/` for listings. No `;`, no
 * spaces, no percent-encoded bytes: the path judged is byte for byte the path sent.
 */
const SEGMENT = '[A-Za-z0-9_.:-]*[A-Za-z0-9_:-]';
const METADATA_PATH = new RegExp(`^/(?:latest|1\\.0|\\d{4}-\\d{2}-\\d{2})(?:/${SEGMENT})*/?$`);
/**
 * The credential routes podiam answers itself (never forwarded) also take the characters of IAM
 * role names (`+=,@`, and a trailing `.`), so a pod whose role is `app+batch` can ask for it
 * (dot segments are refused earlier, by safePath).
 */
const CREDENTIALS_PATH = /^\/(?:latest|1\.0|\d{4}-\d{2}-\d{2})\/meta-data\/iam\/security-credentials\/[\w+=,.@-]+\/?$/;

/** The kind of a (safePath-checked, query-less) path, or a 400 when it is not one podiam accepts. */
export function classifyPath(path: string): PathKind {
  if (path === TOKEN_PATH) return 'token';
  if (LOCAL_PATHS.has(path)) return 'local';
  // `/` lists the versions: nothing to read differently.
  if (path === '/' || METADATA_PATH.test(path) || CREDENTIALS_PATH.test(path)) return 'metadata';
  throw new BadRequest(400, `${JSON.stringify(path.slice(0, 200))} is not an EC2 metadata path (a version, then segments of letters, digits, -, _, . and :)`);
}

/**
 * The method check, the other half of the allow-list: GET/HEAD on metadata and local paths,
 * PUT on the token route only. A PUT anywhere else is refused here, so the proxy never forwards one.
 */
export function checkMethod(method: string, kind: PathKind, path: string): void {
  if (kind === 'token' ? method === 'PUT' : method === 'GET' || method === 'HEAD') return;
  // EC2 refuses a token PUT on a dated version with 403; answered here, as EC2 would, without asking it.
  if (method === 'PUT' && DATED_TOKEN_PATH.test(path)) throw new BadRequest(403, `tokens are issued on ${TOKEN_PATH} only`);
  throw new BadRequest(405, `${method.slice(0, 16)} is not allowed on ${path.slice(0, 200)}`);
}

/**
 * user-data: the node's bootstrap script. On kubeadm and kOps nodes it holds the cluster join
 * token (and sometimes more): a pod that reads it can join the cluster as a node. The node keeps
 * it (its own addresses); pods get 403 PathRefused unless --allow-user-data.
 */
const USER_DATA_PATH = /^\/(?:latest|1\.0|\d{4}-\d{2}-\d{2})\/user-data\/?$/i;

export function isUserData(decodedPath: string): boolean {
  return USER_DATA_PATH.test(decodedPath);
}
