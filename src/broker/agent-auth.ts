/**
 * Who is asking the broker: the agent's projected ServiceAccount token (audience
 * --agent-audience), reviewed by the API server once and then known by its hash until it
 * expires (token/reviews.ts); the node it may be served for (node-restriction.ts). And, on the
 * token path, the pod's own token (audience --token-audience), reviewed the same way.
 * What a token claims is read first only to refuse what cannot be valid (wrong audience,
 * expired, another ServiceAccount, no bound pod) without an API call; trust comes from the review.
 */
import { BrokerRefusal, InvalidToken, PodiamError } from '../errors.js';
import type { ReviewOutcome } from '../kube/token-review.js';
import type { PodInfo } from '../roles.js';
import { claimsOf, tokenFromHeader, tokenHash } from '../token/bearer.js';
import type { ReviewOutcomeLabel } from '../token/reviews.js';
import { TokenReviews } from '../token/reviews.js';
import type { AgentServiceAccount, PodView, TokenSubject } from './node-restriction.js';
import { agentNode, checkPodToken, peerPod } from './node-restriction.js';

export interface AgentAuthOptions {
  readonly review: (token: string, audiences: readonly string[]) => Promise<ReviewOutcome>;
  readonly agent: AgentServiceAccount;
  readonly agentAudience: string;
  readonly tokenAudience: string;
  readonly pods: PodView;
  readonly now?: () => number;
  readonly onReview?: (audience: 'agent' | 'pod' | 'peer', outcome: ReviewOutcomeLabel) => void;
  /** --peers: the brokers' own ServiceAccount, whose tokens (audience agentAudience) are the other replicas'. */
  readonly peers?: AgentServiceAccount;
}

/**
 * A cold start (the broker, or every agent of a cluster rolled at once) brings one new token per
 * node at the same moment. Only tokens bound to an agent pod the broker sees running get this far
 * (checked before any review), each pod's reviews are budgeted, so the queue is bounded by the
 * cluster's nodes: it must hold them all. With the token path's 256, 1,000 agents starting
 * together had ~750 refused 503 TokenReviewUnavailable and retrying (BENCHMARKS.md, broker at scale).
 */
const AGENT_REVIEWS_IN_FLIGHT = 32;
const AGENT_REVIEWS_QUEUED = 10_000;

export interface Agent {
  /** The agent's pod (namespace/name), for the logs. */
  readonly pod: string;
  readonly node: string;
}

export class AgentAuth {
  private readonly agents: TokenReviews;
  private readonly podTokens: TokenReviews;
  private readonly peerTokens: TokenReviews;
  private readonly now: () => number;

  constructor(private readonly options: AgentAuthOptions) {
    this.now = options.now ?? Date.now;
    this.agents = new TokenReviews({
      review: options.review,
      audience: options.agentAudience,
      now: options.now,
      onReview: (o) => options.onReview?.('agent', o),
      maxInFlight: AGENT_REVIEWS_IN_FLIGHT,
      maxQueued: AGENT_REVIEWS_QUEUED,
    });
    this.podTokens = new TokenReviews({ review: options.review, audience: options.tokenAudience, now: options.now, onReview: (o) => options.onReview?.('pod', o) });
    this.peerTokens = new TokenReviews({ review: options.review, audience: options.agentAudience, now: options.now, onReview: (o) => options.onReview?.('peer', o) });
  }

  /** Another replica of this broker (--peers) behind `Authorization: Bearer <token>`: its pod name, or a 403. */
  async peer(authorization: string | string[] | undefined): Promise<string> {
    const { peers, pods } = this.options;
    if (peers === undefined) throw new BrokerRefusal('NotAPeer', 'this broker was started without --peers: it answers no other replica');
    return this.bearer(this.peerTokens, 'PeerTokenInvalid', authorization, (subject) => peerPod(subject, peers, pods));
  }

  /** The agent behind `Authorization: Bearer <token>` and its node, or a 403 (503 when the API server cannot review). */
  async agent(authorization: string | string[] | undefined): Promise<Agent> {
    const { agent, pods } = this.options;
    // Not the agents' ServiceAccount, or not bound to an agent pod the broker sees running on a
    // node: refused without asking the API server (what the review confirms is checked again after it).
    return this.bearer(this.agents, 'AgentTokenInvalid', authorization, (subject) => ({ pod: `${subject.namespace}/${subject.podName}`, node: agentNode(subject, agent, pods) }));
  }

  /**
   * A bearer token for --agent-audience: `check` runs on its claims before any review (what it
   * refuses costs no API call), then on the reviewed identity, whose result is the answer.
   */
  private async bearer<T>(reviews: TokenReviews, code: string, authorization: string | string[] | undefined, check: (subject: TokenSubject) => T): Promise<T> {
    let token: string;
    try {
      token = tokenFromHeader(authorization);
    } catch (err) {
      throw new BrokerRefusal(code, (err as Error).message);
    }
    const hash = tokenHash(token);
    let verdict = reviews.cached(hash);
    if (verdict === undefined) {
      const claims = refusing(code, () => claimsOf(token, this.options.agentAudience, this.now()));
      check(claims);
      verdict = await reviews.verdict(token, hash, claims);
    }
    if (verdict.error !== undefined) throw new BrokerRefusal(code, verdict.error.message);
    return check(verdict.identity!);
  }

  /** The token path: the pod's own token, valid (reviewed) and bound to exactly this pod. */
  async checkPodToken(token: string, pod: PodInfo): Promise<void> {
    const hash = tokenHash(token);
    let verdict = this.podTokens.cached(hash);
    if (verdict === undefined) {
      const claims = refusing('PodTokenInvalid', () => claimsOf(token, this.options.tokenAudience, this.now()));
      checkPodToken(claims, pod);
      verdict = await this.podTokens.verdict(token, hash, claims);
    }
    if (verdict.error !== undefined) throw new BrokerRefusal('PodTokenInvalid', verdict.error.message);
    checkPodToken(verdict.identity!, pod);
  }

  /** A pod was deleted or recreated: its tokens' verdicts go (an agent's pod included). */
  dropPod(podUid: string): void {
    this.agents.dropPod(podUid);
    this.podTokens.dropPod(podUid);
    this.peerTokens.dropPod(podUid);
  }
}

function refusing<T>(code: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof InvalidToken || (err instanceof PodiamError && err.status === 400)) throw new BrokerRefusal(code, err.message);
    throw err;
  }
}
