/**
 * A watch bounded in time for ListWatch users (the PodIdentityAssociation informer): the pod,
 * namespace and ServiceAccount informers have their own reflector (reflector.ts) with the same
 * deadline.
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { Watch } from '@kubernetes/client-node/dist/watch.js';
import type { KubernetesObject } from '@kubernetes/client-node';

/**
 * The watch as ListWatch uses it, bounded in time as client-go's reflector is: a server-side
 * `timeoutSeconds`, plus a client-side read deadline: no event for `deadlineMs`, from the request
 * on, and the watch is aborted and ended as if the server had timed it out. ListWatch then
 * watches again from the last resourceVersion: the API server replays whatever the silent watch
 * missed (a DELETED included), or answers 410 and ListWatch relists. A dead connection (up,
 * silent) would otherwise be noticed only by TCP keepalive, after about 11 minutes. A quiet but
 * healthy watch is renewed the same way, at no cost in lag (nothing was flowing); a busy one
 * never reaches the deadline. Also: bookmarks, and a signal when the watch stream is really open
 * (ListWatch's own 'connect' fires before the request is made).
 */
export function watchWithDeadline(
  kc: KubeConfig,
  timeoutSeconds: number,
  deadlineMs: number,
  on: { open(): void; silent(silentMs: number): void },
  slim: (o: KubernetesObject) => KubernetesObject,
) {
  const inner = new Watch(kc);
  return {
    watch: async (path: string, query: Record<string, unknown>, callback: (phase: string, obj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void) => {
      let finished = false;
      let expired = false;
      let controller: AbortController | undefined;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: unknown): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        done(err);
      };
      const touch = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          if (finished) return;
          expired = true;
          on.silent(deadlineMs);
          finish(null);
          controller?.abort();
        }, deadlineMs);
        timer.unref();
      };
      const cb = (phase: string, obj: unknown): void => {
        touch();
        callback(phase, phase === 'ERROR' || phase === 'BOOKMARK' ? obj : slim(obj as KubernetesObject));
      };
      let failed = false;
      touch();
      try {
        controller = await inner.watch(path, { ...query, timeoutSeconds, allowWatchBookmarks: true }, cb, (err: unknown) => {
          if (err) failed = true;
          finish(err);
        });
        // The deadline passed while connecting: this late stream is not wanted.
        if (expired) controller.abort();
        else if (!failed) on.open();
        return controller;
      } catch (err) {
        // Watch.watch prepares auth outside its own try: an exec/OIDC plugin failure would be an
        // unhandled rejection (ListWatch restarts the watch without awaiting it). Report it as a
        // failed watch instead, so the informer backs off and retries.
        finish(err);
        const aborted = new AbortController();
        aborted.abort();
        return aborted;
      }
    },
  } as unknown as Watch;
}
