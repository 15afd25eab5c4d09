/**
 * Entry run INSIDE a network namespace (`ip netns exec NS node probe.mjs ...`) to exercise the
 * IMDS client and the spot poller with their default endpoint, which only ever resolves to the
 * namespace's own 169.254.169.254. The test process itself never contacts that address.
 *
 *   client            → one JSON line: endpoint, a few metadata values, token PUT count
 *   disabled          → the error a default-endpoint GET gets with AWS_EC2_METADATA_DISABLED=true
 *   poll POLL_MS MAX_MS → {"event":"started"} then {"event":"interruption",...}; exit 3 on timeout
 *
 * Diagnostics (the poller's log) go to stderr; stdout carries only the JSON lines.
 */
import { ImdsClient, ImdsError, SpotPoller, type SpotLogger } from '@spotctl/agent';

function write(message: unknown): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const log = (level: string) => (obj: Record<string, unknown>, msg?: string) =>
  process.stderr.write(`${JSON.stringify({ level, msg, ...obj })}\n`);
const logger: SpotLogger = { debug: () => undefined, info: log('info'), warn: log('warn'), error: log('error') };

const [mode = 'client', a = '1000', b = '20000'] = process.argv.slice(2);

if (mode === 'client') {
  // No endpoint, no environment: the default address.
  await using client = new ImdsClient();
  const results: Record<string, unknown> = { endpoint: client.endpoint };
  for (const [key, path] of [
    ['instanceId', 'meta-data/instance-id'],
    ['availabilityZone', 'meta-data/placement/availability-zone'],
    ['instanceType', 'meta-data/instance-type'],
  ] as const) {
    const res = await client.get(path);
    results[key] = res.status === 200 ? res.body : `HTTP ${res.status}`;
  }
  const action = await client.get('meta-data/spot/instance-action');
  results.instanceActionStatus = action.status;
  results.tokenFetches = client.tokenFetches;
  write(results);
} else if (mode === 'disabled') {
  await using client = new ImdsClient();
  try {
    await client.get('meta-data/instance-id');
    write({ endpoint: client.endpoint, error: null });
  } catch (e) {
    write({ endpoint: client.endpoint, error: e instanceof ImdsError ? { kind: e.kind, message: e.message } : String(e) });
  }
} else if (mode === 'poll') {
  const maxMs = Number(b);
  const timer = setTimeout(() => {
    write({ event: 'timeout' });
    process.exit(3);
  }, maxMs);
  const poller = new SpotPoller({
    pollIntervalMs: Number(a),
    logger,
    onInterruption: (action, noticedAt) => {
      write({ event: 'interruption', action, noticedAt });
      clearTimeout(timer);
      void poller.close().then(() => process.exit(0));
    },
  });
  poller.start();
  write({ event: 'started', at: Date.now() });
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
