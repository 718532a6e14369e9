/**
 * Builds (does not start) the broker's HTTPS server for agents. A request reads top-down:
 * agent token -> agent's node -> the pod asked about, from the broker's own view, on that node
 * -> (token path) the pod's own token -> role -> credentials (the cluster's cache over STS).
 * Every refusal is a 403 with a code, logged and counted; answers are never logged.
 */
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CredentialSource } from '../credentials/source.js';
import type { WireChanges, WireCredentials, WireRole } from '../credentials/broker-wire.js';
import { CHANGES_PATH, CREDENTIALS_PATH, ROLE_PATH, parseChangesRequest, parsePodRequest } from '../credentials/broker-wire.js';
import { BadRequest, NotReady, PodiamError, toJsonHttpResponse } from '../errors.js';
import { readBody } from '../http-body.js';
import type { Logger } from '../log.js';
import type { RoleRequest } from '../roles.js';
import type { CertificatePair } from '../webhook/tls.js';
import type { Agent, AgentAuth } from './agent-auth.js';
import type { BrokerMetrics } from './metrics.js';
import { PEER_CREDENTIALS_PATH, parsePeerRequest, wirePeerCredentials } from './peers.js';
import type { AwsCredentials } from '../aws/sts.js';
import type { PodView } from './node-restriction.js';
import { podForNode } from './node-restriction.js';

/** A request is a pod's coordinates and at most one ServiceAccount token. */
const MAX_BODY_BYTES = 32 * 1024;

export interface BrokerServerDeps {
  readonly auth: Pick<AgentAuth, 'agent' | 'checkPodToken' | 'peer'>;
  readonly pods: PodView;
  readonly source: CredentialSource;
  readonly ready: () => boolean;
  readonly log: Logger;
  readonly metrics: BrokerMetrics;
  /** Agents' long polls for policy changes (src/broker/policy-changes.ts). */
  readonly changes: { wait(node: string, since: number | undefined): Promise<WireChanges> };
  /** --peers: credentials this replica owns, for another replica (src/broker/peers.ts). */
  readonly peers?: { serve(request: RoleRequest, urgent: boolean, minValidMs: number): Promise<{ readonly credentials: AwsCredentials; readonly issuedMs: number }> };
}

export function createBrokerServer(certificate: CertificatePair, deps: BrokerServerDeps): https.Server {
  const server = https.createServer({ cert: certificate.cert, key: certificate.key, minVersion: 'TLSv1.2' }, (req, res) => {
    void handle(req, res, deps);
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  // Longer than the agents' idle sockets live, so the agent closes first (no reuse of a closed one).
  server.keepAliveTimeout = 65_000;
  return server;
}

type Route = 'credentials' | 'role' | 'changes' | 'peer' | 'invalid';

/**
 * The agent saw the pod before the broker's informer did (its watch is of one node, the broker's of
 * the cluster): an unknown pod, or one known by an older uid, is waited for briefly, as the agent's
 * own --pod-wait does, rather than refused as a denial the agent would hold on to.
 */
const POD_WAIT_MS = 1000;
async function podWhenKnown(node: string, asked: Parameters<typeof podForNode>[1], pods: Parameters<typeof podForNode>[2]): Promise<ReturnType<typeof podForNode>> {
  const deadline = Date.now() + POD_WAIT_MS;
  for (;;) {
    try {
      return podForNode(node, asked, pods);
    } catch (err) {
      const lagging = err instanceof PodiamError && (err.code === 'PodNotFound' || err.code === 'PodUidMismatch');
      if (!lagging || Date.now() >= deadline) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, deps: BrokerServerDeps): Promise<void> {
  const started = process.hrtime.bigint();
  const path = (req.url ?? '/').split('?')[0];
  const route: Route = path === CREDENTIALS_PATH ? 'credentials' : path === ROLE_PATH ? 'role' : path === CHANGES_PATH ? 'changes' : path === PEER_CREDENTIALS_PATH ? 'peer' : 'invalid';
  let agent: Agent | undefined;
  let pod: string | undefined;
  try {
    if (route === 'invalid') throw new BadRequest(404, `no route ${path}; agents POST ${CREDENTIALS_PATH}, ${ROLE_PATH} or ${CHANGES_PATH}, replicas ${PEER_CREDENTIALS_PATH}`);
    if (req.method !== 'POST') throw new BadRequest(405, `${req.method} not allowed on ${path}; use POST`);
    if (!deps.ready()) throw new NotReady('the broker\'s informers');
    if (route === 'peer') {
      // Another replica asking for credentials this one owns: its token, then the cache (never logged).
      const peer = await deps.auth.peer(req.headers.authorization); //          403, 503
      pod = `replica ${peer}`;
      if (deps.peers === undefined) throw new BadRequest(404, 'this broker was started without --peers');
      const asked = parsePeerRequest(await readBody(req, MAX_BODY_BYTES, 'request body')); // 400
      const creds = await deps.peers.serve(asked.request, asked.urgent, asked.minValidMs); // 5xx, 403 (STS refused)
      deps.metrics.requests.inc({ route, code: 'OK' });
      send(res, 200, wirePeerCredentials(creds.credentials, creds.issuedMs));
      return;
    }
    agent = await deps.auth.agent(req.headers.authorization); //                403, 503
    if (route === 'changes') {
      const since = parseChangesRequest(await readBody(req, MAX_BODY_BYTES, 'request body')); // 400
      // Held: not a request's latency (the histogram is the credential routes').
      const answer = await deps.changes.wait(agent.node, since);
      deps.metrics.requests.inc({ route, code: 'OK' });
      send(res, 200, JSON.stringify(answer));
      return;
    }
    const asked = parsePodRequest(await readBody(req, MAX_BODY_BYTES, 'request body'), route === 'credentials'); // 400
    pod = `${asked.namespace}/${asked.name}`;
    const info = await podWhenKnown(agent.node, asked, deps.pods); //           404, 403
    if (asked.proof.kind === 'token') await deps.auth.checkPodToken(asked.proof.token, info); // 403
    const role = await deps.source.role(info); //                               404, 403 (denials)
    let answer: WireRole | WireCredentials = wireRole(role);
    if (route === 'credentials') {
      const { creds } = await deps.source.credentials(info, asked.proof); //   5xx, 403 (STS refused)
      const c = JSON.parse(creds.body.toString('utf8')) as { AccessKeyId: string; SecretAccessKey: string; Token: string; Expiration: string };
      answer = { ...wireRole(role), credentials: { AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, Token: c.Token, Expiration: c.Expiration }, issuedMs: creds.issuedMs };
    }
    deps.metrics.requests.inc({ route, code: 'OK' });
    send(res, 200, JSON.stringify(answer));
  } catch (err) {
    const answer = toJsonHttpResponse(err);
    deps.metrics.requests.inc({ route, code: answer.code });
    const fields = { route, status: answer.status, code: answer.code, agent: agent?.pod, node: agent?.node, pod, reason: err instanceof PodiamError ? err.message : undefined };
    if (answer.status === 403 && err instanceof PodiamError && isRefusal(err.code)) {
      deps.metrics.refusals.inc({ code: answer.code });
      deps.log.warn(route === 'peer' ? 'broker refused a replica\'s request' : 'broker refused an agent request', fields);
    } else if (answer.status >= 500) {
      deps.log.warn('broker could not answer an agent request', fields);
    } else {
      deps.log.info('broker denied credentials', fields);
    }
    send(res, answer.status, answer.body);
  } finally {
    if (route !== 'changes') deps.metrics.seconds.observe({ route }, Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/** Refusals of the caller (authentication and node restriction), as opposed to the pod's own denials (RoleNotAllowed, ...). */
const REFUSALS = new Set(['NotAnAgent', 'AgentTokenInvalid', 'AgentPodUnknown', 'PodUidMismatch', 'PodNotOnAgentNode', 'PodEnded', 'TokenNotForPod', 'PodTokenInvalid', 'NotAPeer', 'PeerTokenInvalid', 'PeerPodUnknown']);
function isRefusal(code: string): boolean {
  return REFUSALS.has(code);
}

function wireRole(role: RoleRequest): WireRole {
  return role.externalId === undefined ? { roleArn: role.roleArn, roleName: role.roleName, sessionName: role.sessionName } : { roleArn: role.roleArn, roleName: role.roleName, sessionName: role.sessionName, externalId: role.externalId };
}

function send(res: ServerResponse, status: number, body: string): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}
