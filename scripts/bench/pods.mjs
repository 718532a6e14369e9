/**
 * Pod objects the size real ones are (about 4 KB of JSON): labels, annotations, owner
 * references, two containers with env, ports, probes, resources and mounts, volumes,
 * tolerations, conditions and container statuses. Deterministic for a given index.
 */
import { createHash } from 'node:crypto';

const hex = (s, n) => createHash('sha256').update(s).digest('hex').slice(0, n);

export function realisticPod({ name, namespace = 'default', node, ip, role, index = 0 }) {
  const app = name.replace(/-[^-]*$/, '') || name;
  const hash = hex(`${app}`, 10);
  const started = new Date(Date.UTC(2025, 0, 1, 0, 0, index % 3600)).toISOString().replace('.000Z', 'Z');
  const container = (cname, image, port) => ({
    name: cname,
    image: `123456789012.dkr.ecr.us-east-1.amazonaws.com/${image}:v1.${index % 50}.3`,
    imagePullPolicy: 'IfNotPresent',
    ports: [{ name: 'http', containerPort: port, protocol: 'TCP' }],
    env: [
      { name: 'AWS_REGION', value: 'us-east-1' },
      { name: 'AWS_STS_REGIONAL_ENDPOINTS', value: 'regional' },
      { name: 'LOG_LEVEL', value: 'info' },
      { name: 'APP_NAME', value: app },
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } },
      { name: 'NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } },
      { name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: `${app}-db`, key: 'password' } } },
    ],
    resources: { limits: { cpu: '500m', memory: '512Mi' }, requests: { cpu: '100m', memory: '256Mi' } },
    livenessProbe: { httpGet: { path: '/healthz', port, scheme: 'HTTP' }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port, scheme: 'HTTP' }, periodSeconds: 5, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    volumeMounts: [
      { name: 'config', mountPath: '/etc/app', readOnly: true },
      { name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
  });
  const status = (cname, image) => ({
    name: cname,
    state: { running: { startedAt: started } },
    lastState: {},
    ready: true,
    restartCount: 0,
    image: `123456789012.dkr.ecr.us-east-1.amazonaws.com/${image}:v1.${index % 50}.3`,
    imageID: `123456789012.dkr.ecr.us-east-1.amazonaws.com/${image}@sha256:${hex(image + index, 64)}`,
    containerID: `containerd://${hex(cname + name, 64)}`,
    started: true,
  });
  const annotations = {
    'kubernetes.io/psp': 'eks.privileged',
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '9090',
    'checksum/config': hex(`config-${app}`, 64),
    'cluster-autoscaler.kubernetes.io/safe-to-evict': 'true',
  };
  if (role !== undefined) annotations['iam.amazonaws.com/role'] = role;
  return {
    metadata: {
      name,
      namespace,
      generateName: `${app}-${hash}-`,
      labels: {
        app,
        'app.kubernetes.io/name': app,
        'app.kubernetes.io/instance': `${app}-prod`,
        'app.kubernetes.io/version': `1.${index % 50}.3`,
        'app.kubernetes.io/part-of': 'platform',
        'pod-template-hash': hash,
        team: `team-${index % 12}`,
        tier: index % 2 === 0 ? 'backend' : 'worker',
      },
      annotations,
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-${hash}`, uid: `${hex(app, 8)}-0000-4000-8000-${hex(app, 12)}`, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      nodeName: node,
      serviceAccountName: app,
      restartPolicy: 'Always',
      schedulerName: 'default-scheduler',
      dnsPolicy: 'ClusterFirst',
      terminationGracePeriodSeconds: 30,
      securityContext: { runAsNonRoot: true, runAsUser: 1000, fsGroup: 2000 },
      containers: [container('app', app, 8080), container('metrics-sidecar', 'metrics-sidecar', 9090)],
      volumes: [
        { name: 'config', configMap: { name: `${app}-config`, defaultMode: 420 } },
        {
          name: 'kube-api-access',
          projected: {
            defaultMode: 420,
            sources: [
              { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
              { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
              { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
            ],
          },
        },
      ],
      tolerations: [
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      ],
      priority: 0,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
    },
    status: {
      phase: 'Running',
      conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: started })),
      hostIP: `10.0.${Math.floor(index / 250) % 250}.${(index % 250) + 1}`,
      podIP: ip,
      podIPs: [{ ip }],
      startTime: started,
      containerStatuses: [status('app', app), status('metrics-sidecar', 'metrics-sidecar')],
      qosClass: 'Burstable',
    },
  };
}
