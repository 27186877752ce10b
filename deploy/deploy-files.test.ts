// The deploy files, each checked by its engine's own schema or parser (Compose: the Compose specification's JSON
// schema as dclint ships it, with ajv; Kubernetes: kubernetes-models' validate(); Nomad: HashiCorp's HCL2 parser
// compiled to JS), then for what matters beyond syntax: every WORKCELL_* variable is one src/config.ts reads, the
// commands are the CLI's, ports agree between listeners, health checks, Services and NetworkPolicies, the worker gets
// exactly the documented privileges (and the API none of them), NetworkPolicies select the pods they mean, images
// are pinned, and Compose publishes the API on loopback only.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import { Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { describeConfig } from '../src/config.ts';
import { checkoutFiles, serverFiles } from './image/build.ts';

const require = createRequire(import.meta.url);
const deployDir = fileURLToPath(new URL('.', import.meta.url));
const repositoryRoot = join(deployDir, '..');
const read = (path: string) => readFileSync(join(deployDir, path), 'utf8');
const packageVersion = (JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { version: string }).version;

/** The privileges a worker gets, as deploy/README.md documents them ("Privileges"); the API gets none of these but the file ones. */
const workerCapabilities = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'KILL', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_ADMIN'];
const apiCapabilities = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER'];
const apiPort = 8080;
const internalPort = 8081;
const dataDir = '/var/lib/workcell/data';

const configEnvNames = new Set(describeConfig().map((entry) => entry.env));
/** Variables read outside config.ts that deploy files may set: provider keys (resolve-model.ts) and the engines' own. */
const otherEnvNames = new Set(['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'POD_IP', 'POSTGRES_USER', 'POSTGRES_DB', 'POSTGRES_PASSWORD', 'PGDATA']);

function expectKnownEnvNames(names: Iterable<string>, where: string): void {
  for (const name of names) {
    if (name.startsWith('WORKCELL_')) expect(configEnvNames.has(name), `${where}: ${name} is not a variable src/config.ts reads`).toBe(true);
    else expect(otherEnvNames.has(name), `${where}: ${name} is neither a WORKCELL_* variable nor one of ${[...otherEnvNames].join(', ')}`).toBe(true);
  }
}

/** An image reference must name a version: a tag with a digit in it (never latest) or a digest. */
function expectPinned(image: string, where: string): void {
  expect(image, `${where}: ${image} is not pinned`).toMatch(/(@sha256:[0-9a-f]{64}|:[^:/@]*\d[^:/@]*)$/);
  expect(image, where).not.toMatch(/:latest$/);
}

/** Compose's variable interpolation with every variable unset: ${X:-default} is the default, ${X:?error} a placeholder. */
function interpolateUnset(text: string): string {
  return text.replace(/\$\{([A-Z0-9_]+)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}/g, (_, _name: string, _dash?: string, fallback?: string, question?: string) => {
    if (question !== undefined) return 'set-by-operator';
    return fallback ?? '';
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Compose

interface ComposeService {
  image: string;
  command?: string[];
  environment?: Record<string, string | number | null>;
  ports?: string[];
  networks?: string[];
  volumes?: string[];
  cap_add?: string[];
  cap_drop?: string[];
  security_opt?: string[];
  privileged?: boolean;
  devices?: string[];
  healthcheck?: { test: string[] };
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  networks: Record<string, { internal?: boolean } | null>;
  volumes: Record<string, unknown>;
}

const composeText = read('compose.yaml');
const compose = parseYaml(interpolateUnset(composeText), { merge: true }) as ComposeFile;

function composeSchemaValidator() {
  const schemaPath = join(dirname(require.resolve('dclint/package.json')), 'schemas', 'compose.schema.json');
  const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as Record<string, unknown>;
  delete schema.$schema; // draft-07, ajv's default; its https URL is not one ajv registers
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats.default(ajv);
  return ajv.compile(schema);
}

describe('deploy/compose.yaml', () => {
  const validate = composeSchemaValidator();

  it('is valid against the Compose specification schema (which does refuse a broken file)', () => {
    expect(validate(compose), JSON.stringify(validate.errors, null, 1)).toBe(true);
    const broken = structuredClone(compose);
    (broken.services.worker as unknown as Record<string, unknown>).cap_add = 'SYS_ADMIN';
    (broken.services.api as unknown as Record<string, unknown>).healthcheck = { test: ['CMD', 'true'], intervall: '5s' };
    expect(validate(broken)).toBe(false);
  });

  it('runs the API as `serve --no-worker` and workers as `worker`, with known variables', () => {
    expect(compose.services.api?.command).toEqual(['serve', '--no-worker']);
    expect(compose.services.worker?.command).toEqual(['worker']);
    for (const [name, service] of Object.entries(compose.services)) expectKnownEnvNames(Object.keys(service.environment ?? {}), `compose service ${name}`);
    // The unparsed file too: a variable named only in a comment or an anchor counts.
    expectKnownEnvNames(new Set(composeText.match(/\bWORKCELL_[A-Z0-9_]+/g)), 'compose.yaml');
  });

  it('points every workcell process at the postgres service and the shared data volume', () => {
    for (const name of ['api', 'worker']) {
      const service = compose.services[name]!;
      expect(service.environment?.WORKCELL_DATABASE_URL).toMatch(/^postgresql:\/\/workcell:[^@]+@postgres:5432\/workcell$/);
      expect(service.environment?.WORKCELL_DATA_DIR).toBe(dataDir);
      expect(service.volumes).toContain(`data:${dataDir}`);
    }
  });

  it('publishes the API on 127.0.0.1 only, and nothing else at all', () => {
    const api = compose.services.api!;
    expect(api.ports).toEqual([`127.0.0.1:${apiPort}:${apiPort}`]);
    expect(api.environment?.WORKCELL_PORT).toBe(String(apiPort));
    for (const [name, service] of Object.entries(compose.services)) if (name !== 'api') expect(service.ports, name).toBeUndefined();
  });

  it('keeps the internal route and Postgres on an internal network, and checks health on the right ports', () => {
    expect(compose.networks.backend?.internal).toBe(true);
    expect(compose.services.postgres?.networks).toEqual(['backend']);
    expect(compose.services.worker?.networks).toContain('backend');
    expect(compose.services.worker?.networks).not.toContain('frontend');
    expect(compose.services.api?.networks).toContain('backend');
    const worker = compose.services.worker!;
    expect(worker.environment?.WORKCELL_INTERNAL_PORT).toBe(String(internalPort));
    expect(worker.environment?.WORKCELL_INTERNAL_HOST).toBe('0.0.0.0');
    expect(worker.healthcheck?.test).toEqual(['CMD', 'curl', '-fsS', `http://127.0.0.1:${internalPort}/healthz`]);
    expect(compose.services.api?.healthcheck?.test).toEqual(['CMD', 'curl', '-fsS', `http://127.0.0.1:${apiPort}/healthz`]);
  });

  it('gives the worker exactly the documented privileges, and the API none of them', () => {
    const worker = compose.services.worker!;
    expect(worker.cap_drop).toEqual(['ALL']);
    expect([...(worker.cap_add ?? [])].sort()).toEqual(workerCapabilities);
    expect([...(worker.security_opt ?? [])].sort()).toEqual(['apparmor=unconfined', 'no-new-privileges:true', 'seccomp=unconfined']);
    expect(worker.environment?.WORKCELL_DISK_LIMIT).toBe('tmpfs');
    const api = compose.services.api!;
    expect(api.cap_drop).toEqual(['ALL']);
    expect([...(api.cap_add ?? [])].sort()).toEqual(apiCapabilities);
    expect(api.security_opt).toEqual(['no-new-privileges:true']);
    for (const [name, service] of Object.entries(compose.services)) {
      expect(service.privileged, name).toBeUndefined();
      expect(service.devices, name).toBeUndefined();
      expect((service.security_opt ?? []).join(' '), name).not.toMatch(/systempaths|label=disable/);
      if (name !== 'worker') expect((service.security_opt ?? []).join(' '), name).not.toMatch(/unconfined/);
    }
  });

  it('pins its images', () => {
    for (const [name, service] of Object.entries(compose.services)) expectPinned(service.image, `compose service ${name}`);
    expect(compose.services.api?.image).toBe(`workcell-server:${packageVersion}`);
    expect(compose.services.worker?.image).toBe(`workcell-server:${packageVersion}`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [key: string]: unknown };
const models: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Service': Service,
  'v1/Secret': Secret,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'node.k8s.io/v1/RuntimeClass': RuntimeClass,
};

function readManifests(path: string): Manifest[] {
  return parseAllDocuments(read(path)).map((document) => {
    expect(document.errors, path).toEqual([]);
    return document.toJS() as Manifest;
  });
}

const k8sFiles = ['k8s/namespace.yaml', 'k8s/serviceaccount.yaml', 'k8s/data-pvc.yaml', 'k8s/postgres.yaml', 'k8s/api.yaml', 'k8s/worker.yaml', 'k8s/networkpolicies.yaml', 'k8s/secret.example.yaml', 'k8s/gvisor/runtimeclass.yaml'];
const manifests = k8sFiles.flatMap((path) => readManifests(path).map((manifest) => ({ path, manifest })));
const find = (kind: string, name: string) => {
  const found = manifests.find(({ manifest }) => manifest.kind === kind && manifest.metadata.name === name)?.manifest;
  expect(found, `${kind} ${name}`).toBeDefined();
  return found as Manifest & { spec: Record<string, unknown> };
};

type EnvVar = { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } };
type Container = {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name: string; containerPort: number }>;
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  securityContext?: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
    seccompProfile?: { type: string };
    appArmorProfile?: { type: string };
    procMount?: string;
  };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
};
type PodSpec = { serviceAccountName?: string; automountServiceAccountToken?: boolean; containers: Container[]; hostNetwork?: boolean; hostPID?: boolean; volumes?: Array<{ name: string; persistentVolumeClaim?: { claimName: string } }> };
const podOf = (workload: { spec: Record<string, unknown> }) => (workload.spec.template as { metadata: { labels: Record<string, string> }; spec: PodSpec });
const containerOf = (workload: { spec: Record<string, unknown> }) => podOf(workload).spec.containers[0]!;
const envOf = (container: Container) => new Map((container.env ?? []).map((entry) => [entry.name, entry]));

/** Does a NetworkPolicy-style label selector (matchLabels only, as ours use) select these labels? */
const selects = (selector: { matchLabels?: Record<string, string> }, labels: Record<string, string>) => Object.entries(selector.matchLabels ?? {}).every(([key, value]) => labels[key] === value);

describe('deploy/k8s', () => {
  it('is valid: every document against kubernetes-models (which does refuse a broken one)', () => {
    for (const { path, manifest } of manifests) {
      const Model = models[`${manifest.apiVersion}/${manifest.kind}`];
      expect(Model, `${path}: no model for ${manifest.apiVersion} ${manifest.kind}`).toBeDefined();
      expect(() => new Model!(manifest as never).validate(), `${path}: ${manifest.kind} ${manifest.metadata.name}`).not.toThrow();
    }
    const broken = structuredClone(find('Deployment', 'workcell-worker'));
    (containerOf(broken).ports![0] as { containerPort: unknown }).containerPort = 'internal';
    expect(() => new Deployment(broken as never).validate()).toThrow();
  });

  it('lists every manifest in kustomization.yaml (the example Secret and the gVisor variant aside)', () => {
    const kustomization = parseYaml(read('k8s/kustomization.yaml')) as { resources: string[]; namespace: string; images: Array<{ name: string; newTag: string }> };
    const files = readdirSync(join(deployDir, 'k8s')).filter((name) => name.endsWith('.yaml') && name !== 'kustomization.yaml' && name !== 'secret.example.yaml');
    expect([...kustomization.resources].sort()).toEqual(files.sort());
    expect(kustomization.namespace).toBe('workcell');
    expect(kustomization.images).toEqual([{ name: 'workcell-server', newTag: packageVersion }]);
    const gvisor = parseYaml(read('k8s/gvisor/kustomization.yaml')) as { resources: string[]; patches: Array<{ target: { kind: string; name: string }; patch: string }> };
    expect(gvisor.resources).toEqual(['..', 'runtimeclass.yaml']);
    expect(gvisor.patches[0]?.target).toEqual({ kind: 'Deployment', name: 'workcell-worker' });
    expect(parseYaml(gvisor.patches[0]!.patch)).toEqual([{ op: 'add', path: '/spec/template/spec/runtimeClassName', value: find('RuntimeClass', 'gvisor').metadata.name }]);
  });

  it('runs the API as `serve --no-worker` and workers as `worker`, with known variables and the Secret\'s keys', () => {
    const api = containerOf(find('Deployment', 'workcell-api'));
    const worker = containerOf(find('Deployment', 'workcell-worker'));
    expect(api.args).toEqual(['serve', '--no-worker']);
    expect(worker.args).toEqual(['worker']);
    const secret = find('Secret', 'workcell') as unknown as { stringData: Record<string, string> };
    for (const workload of [find('Deployment', 'workcell-api'), find('Deployment', 'workcell-worker'), find('StatefulSet', 'postgres')]) {
      const container = containerOf(workload);
      expectKnownEnvNames(envOf(container).keys(), `${workload.kind} ${workload.metadata.name}`);
      for (const entry of container.env ?? []) {
        const ref = entry.valueFrom?.secretKeyRef;
        if (ref === undefined) continue;
        expect(ref.name, entry.name).toBe('workcell');
        expect(Object.keys(secret.stringData), `${entry.name}: key ${ref.key}`).toContain(ref.key);
      }
    }
    for (const container of [api, worker]) {
      expect(envOf(container).get('WORKCELL_DATABASE_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'workcell', key: 'database-url' });
      expect(envOf(container).get('WORKCELL_DATA_DIR')?.value).toBe(dataDir);
      expect(container.volumeMounts).toEqual([{ name: 'data', mountPath: dataDir }]);
    }
    expect(secret.stringData['database-url']).toMatch(/@postgres:5432\/workcell$/);
  });

  it('agrees on ports: listeners, probes and the Service', () => {
    const api = containerOf(find('Deployment', 'workcell-api'));
    expect(envOf(api).get('WORKCELL_PORT')?.value).toBe(String(apiPort));
    expect(api.ports).toEqual([{ name: 'http', containerPort: apiPort }]);
    for (const probe of [api.readinessProbe, api.livenessProbe]) expect(probe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
    const service = find('Service', 'workcell-api') as unknown as { spec: { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string }> } };
    expect(service.spec.ports).toEqual([{ name: 'http', port: apiPort, targetPort: 'http' }]);
    expect(selects({ matchLabels: service.spec.selector }, podOf(find('Deployment', 'workcell-api')).metadata.labels)).toBe(true);
    expect(selects({ matchLabels: service.spec.selector }, podOf(find('Deployment', 'workcell-worker')).metadata.labels)).toBe(false);

    const worker = containerOf(find('Deployment', 'workcell-worker'));
    const env = envOf(worker);
    expect(env.get('WORKCELL_INTERNAL_PORT')?.value).toBe(String(internalPort));
    expect(env.get('POD_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    expect(env.get('WORKCELL_INTERNAL_HOST')?.value).toBe('$(POD_IP)');
    expect([...env.keys()].indexOf('POD_IP')).toBeLessThan([...env.keys()].indexOf('WORKCELL_INTERNAL_HOST')); // $(VAR) sees only earlier entries
    expect(worker.ports).toEqual([{ name: 'internal', containerPort: internalPort }]);
    for (const probe of [worker.readinessProbe, worker.livenessProbe]) expect(probe?.httpGet).toEqual({ path: '/healthz', port: 'internal' });
    expect(env.get('WORKCELL_DISK_LIMIT')?.value).toBe('tmpfs');
  });

  it('gives the worker exactly the documented privileges, the API none of them, and no pod the Kubernetes API', () => {
    const worker = containerOf(find('Deployment', 'workcell-worker')).securityContext!;
    expect(worker.capabilities?.drop).toEqual(['ALL']);
    expect([...(worker.capabilities?.add ?? [])].sort()).toEqual(workerCapabilities);
    expect(worker.seccompProfile).toEqual({ type: 'Unconfined' });
    expect(worker.appArmorProfile).toEqual({ type: 'Unconfined' });
    const api = containerOf(find('Deployment', 'workcell-api')).securityContext!;
    expect(api.capabilities?.drop).toEqual(['ALL']);
    expect([...(api.capabilities?.add ?? [])].sort()).toEqual(apiCapabilities);
    expect(api.allowPrivilegeEscalation).toBe(false);
    expect(api.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(api.appArmorProfile).toBeUndefined();
    for (const workload of [find('Deployment', 'workcell-api'), find('Deployment', 'workcell-worker'), find('StatefulSet', 'postgres')]) {
      const pod = podOf(workload).spec;
      const where = workload.metadata.name;
      expect(pod.serviceAccountName, where).toBe('workcell');
      expect(pod.automountServiceAccountToken, where).toBe(false);
      expect(pod.hostNetwork ?? false, where).toBe(false);
      expect(pod.hostPID ?? false, where).toBe(false);
      for (const container of pod.containers) {
        expect(container.securityContext?.privileged ?? false, where).toBe(false);
        expect(container.securityContext?.procMount, where).toBeUndefined();
        expectPinned(container.image, where);
      }
    }
    expect((find('ServiceAccount', 'workcell') as unknown as { automountServiceAccountToken: boolean }).automountServiceAccountToken).toBe(false);
    expect(manifests.filter(({ manifest }) => /Role|RoleBinding/.test(manifest.kind))).toEqual([]);
    expect(containerOf(find('Deployment', 'workcell-api')).image).toBe(`workcell-server:${packageVersion}`);
  });

  it('shares one ReadWriteMany claim for the job files between the API and the workers', () => {
    const claim = find('PersistentVolumeClaim', 'workcell-data') as unknown as { spec: { accessModes: string[] } };
    expect(claim.spec.accessModes).toEqual(['ReadWriteMany']);
    expect(read('k8s/data-pvc.yaml')).toMatch(/POSIX locks[\s\S]*NOT NFS/);
    for (const name of ['workcell-api', 'workcell-worker']) expect(podOf(find('Deployment', name)).spec.volumes).toEqual([{ name: 'data', persistentVolumeClaim: { claimName: 'workcell-data' } }]);
  });

  it('has NetworkPolicies that select the right pods: internal route from the API only, Postgres from workcell only', () => {
    const labels = {
      api: podOf(find('Deployment', 'workcell-api')).metadata.labels,
      worker: podOf(find('Deployment', 'workcell-worker')).metadata.labels,
      postgres: podOf(find('StatefulSet', 'postgres')).metadata.labels,
    };
    type Rule = { from?: Array<{ podSelector?: { matchLabels?: Record<string, string> } }>; ports?: Array<{ port: number }> };
    const policy = (name: string) => find('NetworkPolicy', name) as unknown as { spec: { podSelector: { matchLabels?: Record<string, string> }; policyTypes: string[]; ingress?: Rule[] } };
    const selected = (name: string) => Object.entries(labels).filter(([, value]) => selects(policy(name).spec.podSelector, value)).map(([key]) => key);
    const allowedFrom = (name: string) => Object.entries(labels).filter(([, value]) => (policy(name).spec.ingress ?? []).some((rule) => (rule.from ?? []).some((peer) => peer.podSelector !== undefined && selects(peer.podSelector, value)))).map(([key]) => key);

    expect(selected('default-deny-ingress')).toEqual(['api', 'worker', 'postgres']);
    expect(policy('default-deny-ingress').spec.ingress).toBeUndefined();
    expect(selected('workcell-worker')).toEqual(['worker']);
    expect(allowedFrom('workcell-worker')).toEqual(['api']);
    expect(policy('workcell-worker').spec.ingress?.flatMap((rule) => rule.ports?.map((port) => port.port))).toEqual([internalPort]);
    expect(selected('postgres')).toEqual(['postgres']);
    expect(allowedFrom('postgres')).toEqual(['api', 'worker']);
    expect(policy('postgres').spec.ingress?.flatMap((rule) => rule.ports?.map((port) => port.port))).toEqual([5432]);
    expect(selected('workcell-api')).toEqual(['api']);
    expect(policy('workcell-api').spec.ingress?.flatMap((rule) => rule.ports?.map((port) => port.port))).toEqual([apiPort]);
    for (const { manifest } of manifests.filter(({ manifest }) => manifest.kind === 'NetworkPolicy')) expect((manifest as unknown as { spec: { policyTypes: string[] } }).spec.policyTypes).toEqual(['Ingress']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Nomad

type HclBlock<T> = Record<string, T[]>;
type NomadTask = { driver: string; config: Array<{ image: string; args: string[]; ports: string[]; cap_add?: string[]; cap_drop?: string[]; security_opt?: string[]; privileged?: boolean; devices?: unknown }>; env: Array<Record<string, string>>; template?: Array<{ data: string; env: boolean }>; volume_mount: Array<{ destination: string }> };
type NomadGroup = { count: string | number; network: Array<{ port: HclBlock<{ to: number }> }>; service: Array<{ port: string; check: Array<{ type: string; path: string }> }>; task: HclBlock<NomadTask> };
type NomadFile = { job: HclBlock<{ group: HclBlock<NomadGroup> }>; variable: HclBlock<{ default: unknown }>; locals: Array<{ secrets: string }> };

function parseHcl(text: string): unknown {
  const hcl = require('hcl2-parser') as { parseToObject(input: string): [unknown, unknown] };
  const [result, error] = hcl.parseToObject(text);
  if (error !== null || result === null) throw new Error(`HCL does not parse: ${JSON.stringify(error)}`);
  return result;
}

describe('deploy/nomad/workcell.hcl', () => {
  const text = read('nomad/workcell.hcl');
  const nomad = parseHcl(text) as NomadFile;
  const groups = nomad.job.workcell![0]!.group;
  const group = (name: string) => groups[name]![0]!;
  const task = (groupName: string, taskName: string) => group(groupName).task[taskName]![0]!;

  it('parses as HCL2 (and the parser does refuse a broken file), with an api and a worker group', () => {
    expect(() => parseHcl('job "x" { group "y" { count = } }')).toThrow();
    expect(Object.keys(groups).sort()).toEqual(['api', 'worker']);
    expect(nomad.variable.image![0]!.default).toBe(`workcell-server:${packageVersion}`);
    expectPinned(`workcell-server:${packageVersion}`, 'nomad image');
  });

  it('runs the API as `serve --no-worker` and workers as `worker`, with known variables', () => {
    expect(task('api', 'api').config[0]!.args).toEqual(['serve', '--no-worker']);
    expect(task('worker', 'worker').config[0]!.args).toEqual(['worker']);
    for (const [groupName, taskName] of [['api', 'api'], ['worker', 'worker']] as const) {
      const { env, template, volume_mount: mounts } = task(groupName, taskName);
      expectKnownEnvNames(Object.keys(env[0]!), `nomad ${taskName}`);
      expect(template?.[0]).toMatchObject({ data: '${local.secrets}', env: true });
      const templated = [...nomad.locals[0]!.secrets.matchAll(/^\s*([A-Z0-9_]+)=/gm)].map((match) => match[1]!);
      expect(templated).toContain('WORKCELL_DATABASE_URL');
      expectKnownEnvNames(templated, `nomad ${taskName} template`);
      expect(env[0]!.WORKCELL_DATA_DIR).toBe(dataDir);
      expect(mounts[0]!.destination).toBe(dataDir);
    }
    expectKnownEnvNames(new Set(text.match(/\bWORKCELL_[A-Z0-9_]+/g)), 'workcell.hcl');
  });

  it('agrees on ports between listeners, port mappings and health checks', () => {
    expect(task('api', 'api').env[0]!.WORKCELL_PORT).toBe(String(apiPort));
    expect(group('api').network[0]!.port.http![0]!.to).toBe(apiPort);
    expect(group('api').service[0]!.port).toBe('http');
    expect(group('api').service[0]!.check[0]).toMatchObject({ type: 'http', path: '/healthz' });
    const workerEnv = task('worker', 'worker').env[0]!;
    expect(workerEnv.WORKCELL_INTERNAL_PORT).toBe(String(internalPort));
    expect(workerEnv.WORKCELL_INTERNAL_URL).toBe('http://${NOMAD_ADDR_internal}');
    expect(group('worker').network[0]!.port.internal![0]!.to).toBe(internalPort);
    expect(group('worker').service[0]!.port).toBe('internal');
    expect(group('worker').service[0]!.check[0]).toMatchObject({ type: 'http', path: '/healthz' });
  });

  it('gives the worker exactly the documented privileges, and the API none of them', () => {
    const worker = task('worker', 'worker').config[0]!;
    expect(worker.cap_drop).toEqual(['all']);
    expect([...(worker.cap_add ?? [])].map((cap) => cap.toUpperCase()).sort()).toEqual(workerCapabilities);
    expect([...(worker.security_opt ?? [])].sort()).toEqual(['apparmor=unconfined', 'no-new-privileges:true', 'seccomp=unconfined']);
    expect(task('worker', 'worker').env[0]!.WORKCELL_DISK_LIMIT).toBe('tmpfs');
    const api = task('api', 'api').config[0]!;
    expect(api.cap_drop).toEqual(['all']);
    expect([...(api.cap_add ?? [])].map((cap) => cap.toUpperCase()).sort()).toEqual(apiCapabilities);
    expect(api.security_opt).toEqual(['no-new-privileges:true']);
    for (const config of [worker, api]) {
      expect(config.privileged).toBeUndefined();
      expect(config.devices).toBeUndefined();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The server image and the docs

describe('the server image recipe', () => {
  it('runs the CLI commands the deploy files use', () => {
    const help = (command: string) => spawnSync(process.execPath, [join(repositoryRoot, 'bin/workcell.js'), command, '--help'], { encoding: 'utf8', timeout: 15_000 });
    const serve = help('serve');
    expect(serve.status, serve.stderr).toBe(0);
    expect(serve.stdout).toContain('--no-worker');
    const worker = help('worker');
    expect(worker.status, worker.stderr).toBe(0);
    expect(worker.stdout).toMatch(/Usage: workcell worker/);
  });

  it('puts the server in the image without tests, node_modules or build output', () => {
    const files = serverFiles(['package.json', 'src/app.ts', 'src/app.test.ts', 'bin/workcell.js', 'image/packages.txt', 'image/dist/sandboxd.mjs', 'test/helpers/app.ts', 'node_modules/x/index.js', 'deploy/compose.yaml', 'scripts/install-command.sh', 'scripts/setup.sh']);
    expect(files).toEqual(['bin/workcell.js', 'image/packages.txt', 'package.json', 'scripts/install-command.sh', 'src/app.ts']);
    const dockerfile = read('image/Dockerfile');
    expect(dockerfile).toMatch(/^ENTRYPOINT \["\/usr\/bin\/tini", "--", "\/usr\/local\/lib\/workcell\/entrypoint.sh"\]$/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    const entrypoint = read('image/entrypoint.sh');
    expect(entrypoint).toMatch(/^exec \/usr\/local\/bin\/workcell "\$@"$/m);
    expectKnownEnvNames(new Set([...dockerfile.matchAll(/\bWORKCELL_[A-Z0-9_]+/g), ...entrypoint.matchAll(/\bWORKCELL_[A-Z0-9_]+/g)].map((match) => match[0]).filter((name) => name !== 'WORKCELL_NODE')), 'deploy/image');
  });

  it('finds the checkout\'s files without git too (a copy without .git, as a fresh machine gets it)', () => {
    const copy = mkdtempSync(join(tmpdir(), 'workcell-checkout-'));
    try {
      for (const [path, content] of [['src/app.ts', 'x'], ['src/jobs/a.ts', 'y'], ['bin/workcell.js', 'z'], ['package.json', '{}'], ['package-lock.json', '{}'], ['node_modules/x/index.js', 'no']] as const) {
        mkdirSync(dirname(join(copy, path)), { recursive: true });
        writeFileSync(join(copy, path), content);
      }
      symlinkSync('/etc/passwd', join(copy, 'src/link.ts'));
      expect(serverFiles(checkoutFiles(copy))).toEqual(['bin/workcell.js', 'package-lock.json', 'package.json', 'src/app.ts', 'src/jobs/a.ts']);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('documents each worker privilege in deploy/README.md', () => {
    const readme = read('README.md');
    for (const capability of workerCapabilities) expect(readme, capability).toMatch(new RegExp(`\\| \`${capability}\` \\|`));
    expect(readme).toMatch(/AppArmor unconfined \(`apparmor=unconfined`\) \|/);
    expect(readme).toMatch(/seccomp unconfined \(`seccomp=unconfined`\) \|/);
  });
});
