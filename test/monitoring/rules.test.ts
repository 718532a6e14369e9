/**
 * podiam's alert rules, checked by Prometheus's own tool: `promtool check rules` on the plain
 * rules file and on the PrometheusRule's groups; `promtool test rules` on series built for each
 * alert (podiam.rules.test.yaml, podiam.baseline.test.yaml), where each alert fires and stays
 * silent; and the same unit tests against rules that never fire, which must fail for every alert
 * (so the tests test something). Every alert says what it is, where, and links a README runbook.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RULES = path.join(ROOT, 'manifests/monitoring/podiam.rules.yaml');
const PROMETHEUS_RULE = path.join(ROOT, 'manifests/components/prometheus-operator/prometheusrule.yaml');
const UNIT_TESTS = ['podiam.rules.test.yaml', 'podiam.baseline.test.yaml'].map((f) => path.join(ROOT, 'test/monitoring', f));

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RulesFile {
  groups: Array<{ name: string; rules: Rule[] }>;
}
interface UnitTests {
  rule_files: string[];
  tests: Array<{
    name: string;
    input_series: Array<{ series: string; values: string }>;
    alert_rule_test?: Array<{ eval_time: string; alertname: string; exp_alerts: Array<{ exp_labels: Record<string, string> }> }>;
  }>;
}

/** Alerts that concern the whole cluster, not one node's podiam: no node or pod to name. */
const CLUSTER_WIDE = new Set(['PodiamTargetsMissing', 'PodiamPodsUnavailable']);

function promtool(args: readonly string[], cwd = ROOT): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error !== undefined) throw new Error(`promtool ${args[0]} could not run (${r.error.message}): install the prometheus package (apt-get install prometheus)`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const rulesFile = parse(readFileSync(RULES, 'utf8')) as RulesFile;
const alerts = rulesFile.groups.flatMap((g) => g.rules).filter((r): r is Rule & { alert: string } => r.alert !== undefined);
const unitTests = UNIT_TESTS.map((f) => parse(readFileSync(f, 'utf8')) as UnitTests);

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'podiam-rules-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('the rules, as Prometheus reads them', () => {
  test('promtool check rules passes on the plain rules file', () => {
    const r = promtool(['check', 'rules', RULES]);
    expect(r.out).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(r.code).toBe(0);
  });

  test('promtool check rules passes on the PrometheusRule’s groups, which are exactly the rules file’s', () => {
    const prometheusRule = parse(readFileSync(PROMETHEUS_RULE, 'utf8')) as { kind: string; spec: RulesFile };
    expect(prometheusRule.kind).toBe('PrometheusRule');
    expect(prometheusRule.spec.groups).toEqual(rulesFile.groups);
    const extracted = path.join(tmp, 'prometheusrule.rules.yaml');
    writeFileSync(extracted, stringify({ groups: prometheusRule.spec.groups }));
    const r = promtool(['check', 'rules', extracted]);
    expect(r.out).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(r.code).toBe(0);
  });

  test('the generated files are what scripts/monitoring.mjs makes of their sources (no drift)', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/monitoring.mjs'), '--check'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('promtool check rules refuses a broken expression (the check is real)', () => {
    const broken = path.join(tmp, 'broken.rules.yaml');
    writeFileSync(broken, stringify({ groups: [{ name: 'x', rules: [{ alert: 'X', expr: 'sum by (node) (rate(podiam_http_requests_total[5m])' }] }] }));
    const r = promtool(['check', 'rules', broken]);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/unclosed|parse error/i);
  });
});

describe('every alert', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  // GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
  const anchors = new Set(
    [...readme.matchAll(/^#{1,6} (.+)$/gm)].map((m) =>
      m[1]!
        .trim()
        .toLowerCase()
        .replace(/[^\w\- ]/g, '')
        .replace(/ /g, '-'),
    ),
  );

  test.each(alerts.map((a) => [a.alert, a] as const))('%s: severity, summary, a description that locates it, a runbook in the README', (name, alert) => {
    expect(['critical', 'warning']).toContain(alert.labels?.severity);
    const a = alert.annotations ?? {};
    expect(Object.keys(a).sort()).toEqual(['description', 'runbook_url', 'summary']);
    expect(a.summary!.length).toBeGreaterThan(10);
    if (!CLUSTER_WIDE.has(name)) {
      expect(a.description).toContain('{{ $labels.node }}');
      expect(a.description).toContain('{{ $labels.pod }}');
      expect(a.summary).toContain('{{ $labels.node }}');
    }
    const url = /^https:\/\/github\.com\/podiam\/podiam\/blob\/main\/README\.md#([a-z0-9-]+)$/.exec(a.runbook_url ?? '');
    expect(url).not.toBeNull();
    expect(url![1]).toBe(name.toLowerCase());
    expect(anchors).toContain(url![1]);
  });

  test('has a promtool unit test where it fires and one where series stay silent', () => {
    const coverage = new Map<string, { fires: boolean; silent: boolean }>(alerts.map((a) => [a.alert, { fires: false, silent: false }]));
    const nodeOf = (series: string): string | undefined => /node="([^"]+)"/.exec(series)?.[1];
    for (const file of unitTests) {
      for (const t of file.tests) {
        const inputNodes = new Set(t.input_series.map((s) => nodeOf(s.series)));
        for (const a of t.alert_rule_test ?? []) {
          const c = coverage.get(a.alertname);
          if (c === undefined) throw new Error(`${t.name}: no alert named ${a.alertname}`);
          if (a.exp_alerts.length > 0) c.fires = true;
          // Silent: an evaluation that expects nothing, or input series (nodes) no expected alert names.
          const alerted = new Set<string | undefined>(a.exp_alerts.map((e) => e.exp_labels.node));
          if (a.exp_alerts.length === 0 || [...inputNodes].some((n) => !alerted.has(n))) c.silent = true;
        }
      }
    }
    const missing = [...coverage].filter(([, c]) => !c.fires || !c.silent).map(([name, c]) => `${name} ${JSON.stringify(c)}`);
    expect(missing).toEqual([]);
  });
});

describe('promtool test rules', () => {
  test('every alert fires on its series and stays silent on the healthy ones', () => {
    const r = promtool(['test', 'rules', ...UNIT_TESTS]);
    expect(r.out).not.toContain('FAILED');
    expect(r.out.match(/SUCCESS/g)).toHaveLength(UNIT_TESTS.length);
    expect(r.code).toBe(0);
  });

  test('the same tests fail for every alert whose expression never fires (they test the rules)', () => {
    const never: RulesFile = {
      groups: rulesFile.groups.map((g) => ({ ...g, rules: g.rules.map((rule) => ({ ...rule, expr: 'vector(1) == 0' })) })),
    };
    const mutated = path.join(tmp, 'never.rules.yaml');
    writeFileSync(mutated, stringify(never));
    const copies = UNIT_TESTS.map((f, i) => {
      const copy = path.join(tmp, `unit-${i}.yaml`);
      const tests = parse(readFileSync(f, 'utf8')) as UnitTests;
      writeFileSync(copy, stringify({ ...tests, rule_files: [mutated] }));
      return copy;
    });
    const r = promtool(['test', 'rules', ...copies]);
    expect(r.code).not.toBe(0);
    for (const a of alerts) expect({ alert: a.alert, failed: r.out.includes(`alertname: ${a.alert},`) }).toEqual({ alert: a.alert, failed: true });
  });
});

test('the README’s scrape job is the one in manifests/monitoring/prometheus-scrape.yaml', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Scraping'));
  const block = /```yaml\n([\s\S]*?)```/.exec(section);
  expect(block).not.toBeNull();
  const documented = parse(block![1]!.replace(/^ {2}/gm, '')) as { scrape_configs: unknown[] };
  const file = parse(readFileSync(path.join(ROOT, 'manifests/monitoring/prometheus-scrape.yaml'), 'utf8')) as { scrape_configs: unknown[] };
  expect(documented.scrape_configs).toEqual(file.scrape_configs);
});

test('the README’s alert table lists exactly the alerts, with their severities', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const rows = [...readme.matchAll(/^\| \[(\w+)\]\(#(\w+)\) \| (\w+) \|/gm)].map((m) => ({ alert: m[1], anchor: m[2], severity: m[3] }));
  expect(rows).toEqual(alerts.map((a) => ({ alert: a.alert, anchor: a.alert.toLowerCase(), severity: a.labels?.severity })));
});

describe('the Grafana dashboard', () => {
  interface GridPos {
    x: number;
    y: number;
    w: number;
    h: number;
  }
  interface Panel {
    id: number;
    type: string;
    title: string;
    gridPos: GridPos;
    datasource?: { type: string; uid: string };
    targets?: Array<{ refId: string; expr: string; datasource: { uid: string } }>;
  }
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'manifests/components/prometheus-operator/podiam-dashboard.json'), 'utf8')) as {
    uid: string;
    templating: { list: Array<{ name: string; type: string; query: unknown }> };
    panels: Panel[];
  };

  test('has a Prometheus data source variable and a node variable', () => {
    expect(dashboard.uid).toBe('podiam');
    expect(dashboard.templating.list.map((v) => [v.name, v.type])).toEqual([
      ['datasource', 'datasource'],
      ['node', 'query'],
    ]);
    expect(dashboard.templating.list[0]!.query).toBe('prometheus');
  });

  test('panels have unique ids, fit the 24-column grid without overlapping, and query the chosen data source and nodes', () => {
    const panels = dashboard.panels;
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    const cells = new Set<string>();
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`)).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
      if (p.type === 'row') continue;
      expect(p.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets!.length).toBeGreaterThan(0);
      expect(new Set(p.targets!.map((t) => t.refId)).size).toBe(p.targets!.length);
      for (const t of p.targets!) {
        expect(t.datasource.uid).toBe('${datasource}');
        expect(t.expr).toContain('node=~"$node"');
      }
    }
  });
});
