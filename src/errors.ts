/**
 * Every failure podiam can answer with has a stable `code` and an HTTP `status`.
 * `toHttpResponse` is the one place where errors become HTTP answers.
 */
export class PodiamError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = code;
  }
}

/** A bad flag or environment value: the CLI prints it and exits 2. */
export class ConfigError extends PodiamError {
  constructor(readonly flag: string, message: string) {
    super('ConfigError', 2, `${flag}: ${message}`);
  }
}

/** The informers have not finished their first list yet. */
export class NotReady extends PodiamError {
  constructor(what: string) {
    super('NotReady', 503, `podiam is starting: ${what} not synced yet, try again`);
  }
}

/** No live pod on this node has the caller's IP, even after waiting for the informer. */
export class PodNotFound extends PodiamError {
  constructor(podIp: string, waitedMs: number) {
    super('PodNotFound', 404, `no pod with IP ${podIp} is known on this node (waited ${waitedMs} ms)`);
  }
}

/** The pod has no role annotation and there is no --default-role. */
export class NoRoleForPod extends PodiamError {
  constructor(pod: string, roleKey: string) {
    super('NoRoleForPod', 404, `pod ${pod} has no ${roleKey} annotation and no --default-role is set`);
  }
}

/** An annotation (pod or namespace) holds a value podiam cannot use. */
export class BadAnnotation extends PodiamError {
  constructor(
    readonly object: string,
    readonly annotation: string,
    reason: string,
  ) {
    super('BadAnnotation', 403, `${object}: annotation ${annotation} is invalid: ${reason}`);
  }
}

/** The namespace does not allow the role the pod asks for. */
export class RoleNotAllowed extends PodiamError {
  constructor(pod: string, roleArn: string, namespace: string, namespaceKey: string) {
    super(
      'RoleNotAllowed',
      403,
      `role ${roleArn} of pod ${pod} is not allowed by the ${namespaceKey} annotation of namespace ${namespace}`,
    );
  }
}

/** The caller asked for credentials of a role that is not its own. */
export class RoleMismatch extends PodiamError {
  constructor(pod: string, asked: string, own: string) {
    super('RoleMismatch', 403, `pod ${pod} asked for role ${JSON.stringify(asked)} but its role is ${own}`);
  }
}

/**
 * STS could not give credentials: down or throttled beyond retries (StsUnavailable, 500), or it
 * refused this node the role (a denial, 403): RoleNotTrusted (AccessDenied, "not authorized":
 * the role's trust policy does not allow the node's role) or RoleInvalid (STS rejects the role ARN).
 */
export class StsUnavailable extends PodiamError {
  constructor(roleArn: string, reason: string, options?: { cause?: unknown; refusal?: StsRefusal }) {
    const refusal = options?.refusal;
    super(refusal ?? 'StsUnavailable', refusal === undefined ? 500 : 403, refusal === undefined ? `could not assume ${roleArn}: ${reason}` : reason, { cause: options?.cause });
  }
}

export type StsRefusal = 'RoleNotTrusted' | 'RoleInvalid';

/** The real metadata service did not answer. */
export class UpstreamUnavailable extends PodiamError {
  constructor(reason: string) {
    super('UpstreamUnavailable', 502, `metadata service unavailable: ${reason}`);
  }
}

/** A metadata path podiam never forwards (the node's own identity). */
export class PathRefused extends PodiamError {
  constructor(path: string, why: string) {
    super('PathRefused', 403, `${path} is not served to pods: ${why}`);
  }
}

/** A source address that is neither this node nor a pod indexed on it. */
export class CallerNotAllowed extends PodiamError {
  constructor(ip: string) {
    super('CallerNotAllowed', 403, `${ip} is neither this node nor a pod on it: only they may use the metadata service through podiam`);
  }
}

/** Every caller is at its own cap and the pod token table is full: no caller's token is evicted for another. */
export class TokenTableFull extends PodiamError {
  constructor(max: number) {
    super('TokenTableFull', 503, `${max} IMDSv2 tokens are live on this node; try again later`);
  }
}

export class BadRequest extends PodiamError {
  constructor(status: number, message: string) {
    super('BadRequest', status, message);
  }
}

/** The container-credentials token is not valid here: forged, expired, another audience, or its pod is gone. */
export class InvalidToken extends PodiamError {
  constructor(reason: string) {
    super('InvalidToken', 401, `the ServiceAccount token is not valid: ${reason}`);
  }
}

/** A valid token whose pod is not a live pod on this node (deleted, recreated, or elsewhere). */
export class TokenPodNotHere extends PodiamError {
  constructor(pod: string) {
    super('PodNotOnNode', 403, `the token is bound to pod ${pod}, which is not running on this node`);
  }
}

/** The API server could not review the token (down, slow, or too many reviews waiting). */
export class TokenReviewUnavailable extends PodiamError {
  constructor(reason: string) {
    super('TokenReviewUnavailable', 503, `could not validate the token with the Kubernetes API: ${reason}`);
  }
}

/** Broker mode: no broker replica answered within --broker-timeout (down, unreachable or not ready). */
export class BrokerUnavailable extends PodiamError {
  constructor(reason: string) {
    super('BrokerUnavailable', 503, `the podiam broker did not answer: ${reason}`);
  }
}

/** `podiam broker` refused an agent's request (node restriction, not an agent, bad agent token): always 403. */
export class BrokerRefusal extends PodiamError {
  constructor(code: string, message: string) {
    super(code, 403, message);
  }
}

export interface HttpErrorResponse {
  readonly status: number;
  readonly code: string;
  readonly body: string;
}

/** Maps any thrown value to the HTTP answer a pod gets. Unknown errors never leak their message. */
export function toHttpResponse(err: unknown): HttpErrorResponse {
  if (err instanceof PodiamError && err.status >= 400 && err.status < 600) {
    return { status: err.status, code: err.code, body: `${err.code}: ${err.message}\n` };
  }
  return { status: 500, code: 'InternalError', body: 'InternalError: unexpected error, see podiam logs\n' };
}

/**
 * The container-credentials protocol's error answer (GET /v1/credentials): JSON
 * `{"code","message"}`, as the EKS Pod Identity agent answers. Unknown errors never leak their message.
 */
export function toJsonHttpResponse(err: unknown): HttpErrorResponse {
  if (err instanceof PodiamError && err.status >= 400 && err.status < 600) {
    return { status: err.status, code: err.code, body: JSON.stringify({ code: err.code, message: err.message }) };
  }
  return { status: 500, code: 'InternalError', body: JSON.stringify({ code: 'InternalError', message: 'unexpected error, see podiam logs' }) };
}
