/**
 * From `--workers N` to the instance types worth pricing.
 *
 * The rule: every worker gets one physical core, and the machine keeps 2 vCPUs of headroom for
 * the OS, the agent and the job's main process. So a type needs `N × threadsPerCore + 2` vCPUs:
 * `2N + 2` on x86 types with SMT (two threads per core: c6a, m6i, ...) and `N + 2` where a vCPU is
 * a whole core (Graviton c6g/c7g, and also AMD c7a/m7a/r7a, which AWS ships without SMT). We read
 * the threads per core from DescribeInstanceTypes instead of assuming it from the architecture,
 * so a c7a.2xlarge (8 cores) counts as fitting 4 workers, as it should.
 *
 * `--no-ht` launches SMT types with `CpuOptions { CoreCount, ThreadsPerCore: 1 }`: the workers
 * need N cores plus one core of headroom, so a type fits when some `ValidCores` value is ≥ N + 1,
 * and we pick the LARGEST valid core count, because EC2 bills the instance, not the cores — fewer
 * cores would cost the same and give less. Types that already run one thread per core (Graviton,
 * c7a) get no CpuOptions at all: AWS rejects CPU option changes on Graviton, and there is nothing
 * to turn off on either. CoreCount and ThreadsPerCore are always given together (AWS requires both).
 */
import { UserError } from '@spotctl/shared';
import type { _InstanceType, EC2Client, InstanceTypeInfo } from '@aws-sdk/client-ec2';
import createDebug from 'debug';
import { loadEc2Sdk, sendOptions, type Ec2ClientFor } from './clients.ts';
import { awsErrorName, awsUserError, isAbort } from './errors.ts';
import { GPU_FAMILY_PATTERNS, describeGpuRequest, gpuInfoOf, gpuMismatch, type GpuInfo, type GpuRequest } from './gpus.ts';

const debug = createDebug('spotctl:ec2');

export type Architecture = 'x86_64' | 'arm64';

/** @default 4 */
export const DEFAULT_WORKERS = 4;
/** vCPUs kept free beside the workers. */
export const HEADROOM_VCPUS = 2;
/** Compute-optimised AMD (x86) and Graviton (ARM) families: the best price per core for CPU-bound jobs. */
export const DEFAULT_FAMILIES: Readonly<Record<Architecture, readonly string[]>> = {
  x86_64: ['c6a', 'c7a'],
  arm64: ['c6g', 'c7g'],
};
/** Sizes above the smallest that fits that are priced too (a bigger size is sometimes cheaper). */
export const DEFAULT_SIZES_UP = 1;
/** DescribeInstanceTypes returns at most 100 per page; c6a+c7a are ~25 types, so this is generous. */
const MAX_TYPE_PAGES = 20;
export const MAX_WORKERS = 512;

/** `CpuOptions` for RunInstances: both fields, always. */
export interface CpuOptions {
  CoreCount: number;
  ThreadsPerCore: 1;
}

/** What we use of a DescribeInstanceTypes entry. */
export interface InstanceTypeSpec {
  instanceType: string;
  family: string;
  architectures: string[];
  defaultVcpus: number;
  defaultCores: number;
  defaultThreadsPerCore: number;
  validCores: number[];
  validThreadsPerCore: number[];
  supportsSpot: boolean;
  bareMetal: boolean;
  memoryMiB: number | undefined;
  /** The type's GPUs (DescribeInstanceTypes GpuInfo); absent on types without one. */
  gpu?: GpuInfo;
}

/** A type that fits the request, with how it would be launched. */
export interface SizedType {
  instanceType: string;
  family: string;
  architecture: Architecture;
  /** vCPUs the instance has as launched (CoreCount when CpuOptions turn SMT off). */
  vcpus: number;
  /** Threads per core as launched. */
  threadsPerCore: number;
  cpuOptions?: CpuOptions;
  memoryMiB?: number;
  gpu?: GpuInfo;
}

export interface SizingRequest {
  /** Parallel workers the job runs. @default 4 */
  workers: number;
  /** @default 'x86_64' */
  architecture: Architecture;
  /** Turn SMT off (`CpuOptions.ThreadsPerCore = 1`) where the type has it. @default false */
  noHt?: boolean;
  /** @default 1 */
  sizesUp?: number;
  /** GPUs the type must carry (`--gpus`, `--gpu-memory`). @default undefined (any type, GPU or not) */
  gpus?: GpuRequest;
}

export function familyOf(instanceType: string): string {
  return instanceType.split('.')[0] ?? instanceType;
}

/** vCPUs a type with `threadsPerCore` needs for `workers`: one core each plus 2 vCPUs headroom. */
export function vcpusNeeded(workers: number, threadsPerCore: number): number {
  return workers * threadsPerCore + HEADROOM_VCPUS;
}

/** Physical cores `--no-ht` needs: one per worker plus one of headroom. */
export function coresNeeded(workers: number): number {
  return workers + 1;
}

/** Human summary of the requirement, e.g. "4 workers → ≥ 10 vCPUs (2 threads/core) or ≥ 6 (1 thread/core)". */
export function describeNeed(request: SizingRequest): string {
  const n = request.workers;
  const w = `${n} worker${n === 1 ? '' : 's'}`;
  const gpus = request.gpus ? `${describeGpuRequest(request.gpus)}, ` : '';
  if (request.architecture === 'arm64') return `${gpus}${w} → ≥ ${vcpusNeeded(n, 1)} vCPUs (Graviton: 1 thread per core)`;
  const smt = request.noHt ? `≥ ${coresNeeded(n)} cores with SMT off` : `≥ ${vcpusNeeded(n, 2)} vCPUs with 2 threads per core`;
  return `${gpus}${w} → ${smt}, or ≥ ${vcpusNeeded(n, 1)} vCPUs with 1 thread per core`;
}

export function validateWorkers(workers: number): number {
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
    throw new UserError('SPOTCTL_USAGE', `--workers must be a whole number from 1 to ${MAX_WORKERS}, got ${String(workers)}`, {
      remediation: 'for example: spotctl prices --workers 8',
    });
  }
  return workers;
}

/** Reads an SDK InstanceTypeInfo; undefined when a field we need is missing. */
export function toSpec(info: InstanceTypeInfo): InstanceTypeSpec | undefined {
  const instanceType = info.InstanceType;
  const vcpu = info.VCpuInfo;
  if (!instanceType || !vcpu?.DefaultVCpus) return undefined;
  const threads = vcpu.DefaultThreadsPerCore ?? 1;
  const gpu = gpuInfoOf(info);
  const cores = vcpu.DefaultCores ?? Math.max(1, Math.floor(vcpu.DefaultVCpus / threads));
  return {
    instanceType,
    family: familyOf(instanceType),
    architectures: info.ProcessorInfo?.SupportedArchitectures ?? [],
    defaultVcpus: vcpu.DefaultVCpus,
    defaultCores: cores,
    defaultThreadsPerCore: threads,
    validCores: vcpu.ValidCores?.length ? [...vcpu.ValidCores] : [cores],
    validThreadsPerCore: vcpu.ValidThreadsPerCore?.length ? [...vcpu.ValidThreadsPerCore] : [threads],
    supportsSpot: (info.SupportedUsageClasses ?? []).includes('spot'),
    bareMetal: info.BareMetal === true,
    memoryMiB: info.MemoryInfo?.SizeInMiB,
    ...(gpu ? { gpu } : {}),
  };
}

export type FitResult = { ok: true; type: SizedType; note?: string } | { ok: false; reason: string };

/** Whether one type fits the request, and how it would be launched. */
export function sizeType(spec: InstanceTypeSpec, request: SizingRequest): FitResult {
  const { workers, architecture } = request;
  if (!spec.architectures.includes(architecture)) return { ok: false, reason: `${spec.instanceType} is not ${architecture}` };
  const base = {
    instanceType: spec.instanceType,
    family: spec.family,
    architecture,
    ...(spec.memoryMiB === undefined ? {} : { memoryMiB: spec.memoryMiB }),
    ...(spec.gpu ? { gpu: spec.gpu } : {}),
  };
  const oneThreadAlready = spec.defaultThreadsPerCore === 1;
  if (request.noHt && !oneThreadAlready) {
    if (!spec.validThreadsPerCore.includes(1)) return { ok: false, reason: `${spec.instanceType} cannot run with one thread per core` };
    const coreCount = Math.max(...spec.validCores);
    if (coreCount < coresNeeded(workers))
      return { ok: false, reason: `${spec.instanceType} has ${coreCount} cores, ${coresNeeded(workers)} needed with --no-ht` };
    return { ok: true, type: { ...base, vcpus: coreCount, threadsPerCore: 1, cpuOptions: { CoreCount: coreCount, ThreadsPerCore: 1 } } };
  }
  const need = vcpusNeeded(workers, spec.defaultThreadsPerCore);
  if (spec.defaultVcpus < need) return { ok: false, reason: `${spec.instanceType} has ${spec.defaultVcpus} vCPUs, ${need} needed` };
  const note =
    request.noHt && oneThreadAlready
      ? architecture === 'arm64'
        ? `--no-ht: ${spec.family} (Graviton) has one thread per core and AWS rejects CPU option changes; launched as is`
        : `--no-ht: ${spec.family} already has one thread per core; launched as is`
      : undefined;
  return { ok: true, type: { ...base, vcpus: spec.defaultVcpus, threadsPerCore: spec.defaultThreadsPerCore }, ...(note ? { note } : {}) };
}

export interface TypeChoice {
  types: SizedType[];
  /** Things the user should know (SMT notes, pinned types too small, families without a fit). */
  notes: string[];
}

/**
 * Per family, the smallest sizes that fit plus `sizesUp` sizes above. Bare-metal and types
 * without spot support are left out (metal boots slowly and only exists at the largest sizes).
 */
export function chooseTypes(specs: readonly InstanceTypeSpec[], request: SizingRequest): TypeChoice {
  const sizesUp = request.sizesUp ?? DEFAULT_SIZES_UP;
  const notes = new Set<string>();
  const byFamily = new Map<string, SizedType[]>();
  for (const spec of specs) {
    if (spec.bareMetal || !spec.supportsSpot) continue;
    if (request.gpus && gpuMismatch(spec.instanceType, spec.gpu, request.gpus) !== undefined) continue;
    const fit = sizeType(spec, request);
    if (!fit.ok) continue;
    if (fit.note) notes.add(fit.note);
    const list = byFamily.get(spec.family) ?? [];
    list.push(fit.type);
    byFamily.set(spec.family, list);
  }
  const types: SizedType[] = [];
  for (const [, fits] of [...byFamily].sort(([a], [b]) => a.localeCompare(b))) {
    fits.sort((a, b) => a.vcpus - b.vcpus || (a.memoryMiB ?? 0) - (b.memoryMiB ?? 0) || a.instanceType.localeCompare(b.instanceType));
    const levels = [...new Set(fits.map((t) => t.vcpus))].slice(0, 1 + sizesUp);
    for (const level of levels) {
      const first = fits.find((t) => t.vcpus === level);
      if (first) types.push(first);
    }
  }
  return { types, notes: [...notes] };
}

/**
 * Types the user named with `--instance-type`: kept even when they are smaller than the rule
 * asks (the user decides), with a note saying so.
 */
export function choosePinnedTypes(specs: readonly InstanceTypeSpec[], request: SizingRequest): TypeChoice {
  const notes: string[] = [];
  const types: SizedType[] = [];
  for (const spec of [...specs].sort((a, b) => a.instanceType.localeCompare(b.instanceType))) {
    if (!spec.architectures.includes(request.architecture)) {
      const other = spec.architectures.includes('arm64') ? ' (it is ARM: add --arm)' : ' (it is x86: drop --arm)';
      notes.push(`${spec.instanceType} left out: not ${request.architecture}${other}`);
      continue;
    }
    if (!spec.supportsSpot) {
      notes.push(`${spec.instanceType} left out: it is not sold as spot`);
      continue;
    }
    const gpuProblem = request.gpus ? gpuMismatch(spec.instanceType, spec.gpu, request.gpus) : undefined;
    if (gpuProblem !== undefined) {
      notes.push(`${gpuProblem}: left out`);
      continue;
    }
    const fit = sizeType(spec, request);
    if (fit.ok) {
      if (fit.note) notes.push(fit.note);
      types.push(fit.type);
      continue;
    }
    // Too small (or no valid --no-ht layout): launch it as it is and say so.
    notes.push(`${fit.reason}; using it anyway because you asked for it`);
    types.push({
      instanceType: spec.instanceType,
      family: spec.family,
      architecture: request.architecture,
      vcpus: spec.defaultVcpus,
      threadsPerCore: spec.defaultThreadsPerCore,
      ...(spec.memoryMiB === undefined ? {} : { memoryMiB: spec.memoryMiB }),
      ...(spec.gpu ? { gpu: spec.gpu } : {}),
    });
  }
  return { types, notes };
}

const FAMILY_RE = /^[a-z][a-z0-9-]*$/;
const TYPE_RE = /^[a-z][a-z0-9-]*\.[a-z0-9-]+$/;

/** Splits and checks a comma list flag (`--families c6a,c7a`). */
export function parseList(value: string | undefined, flag: string, re: RegExp): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const bad = items.find((s) => !re.test(s));
  if (items.length === 0 || bad !== undefined) {
    throw new UserError('SPOTCTL_USAGE', `${flag} ${bad === undefined ? 'is empty' : `has an invalid entry '${bad}'`}`, {
      remediation:
        flag === '--families'
          ? 'for example: --families c6a,c7a'
          : flag === '--instance-type'
            ? 'for example: --instance-type c7a.2xlarge'
            : `for example: ${flag} us-east-1,eu-west-1`,
    });
  }
  return [...new Set(items)];
}

export const parseFamilies = (value: string | undefined): string[] | undefined => parseList(value, '--families', FAMILY_RE);
export const parseInstanceTypes = (value: string | undefined): string[] | undefined => parseList(value, '--instance-type', TYPE_RE);

export interface DescribeTypesOptions {
  architecture: Architecture;
  /** Families to list (`c6a` → `c6a.*`). Ignored when `instanceTypes` is given. */
  families?: readonly string[];
  /** Exact types (`--instance-type`). */
  instanceTypes?: readonly string[];
  /**
   * Only types with a GPU: without `families`, every `g*`/`p*` family is listed and kept when its
   * GpuInfo says it has a GPU. @default false
   */
  gpuOnly?: boolean;
  signal?: AbortSignal;
}

/** DescribeInstanceTypes for some families or exact types, every page. */
export async function describeInstanceTypes(client: EC2Client, options: DescribeTypesOptions): Promise<InstanceTypeSpec[]> {
  const { DescribeInstanceTypesCommand } = await loadEc2Sdk();
  const exact = options.instanceTypes !== undefined && options.instanceTypes.length > 0;
  const anyGpuFamily = options.gpuOnly === true && options.families === undefined;
  const families = options.families ?? (anyGpuFamily ? [] : DEFAULT_FAMILIES[options.architecture]);
  const typePatterns = anyGpuFamily ? [...GPU_FAMILY_PATTERNS] : families.map((f) => `${f}.*`);
  const specs: InstanceTypeSpec[] = [];
  let token: string | undefined;
  for (let page = 0; page < MAX_TYPE_PAGES; page++) {
    const response = await client.send(
      new DescribeInstanceTypesCommand(
        exact
          ? // With explicit types we don't filter by architecture or usage class server-side, so the
            // notes can say why a named type was left out.
            { InstanceTypes: [...(options.instanceTypes ?? [])] as _InstanceType[], ...(token ? { NextToken: token } : {}) }
          : {
              Filters: [
                { Name: 'instance-type', Values: typePatterns },
                { Name: 'processor-info.supported-architecture', Values: [options.architecture] },
                { Name: 'supported-usage-class', Values: ['spot'] },
              ],
              MaxResults: 100,
              ...(token ? { NextToken: token } : {}),
            },
      ),
      sendOptions(options.signal),
    );
    for (const info of response.InstanceTypes ?? []) {
      const spec = toSpec(info);
      // The filters are re-checked here: a family filter `c6a.*` must not let `c6an.*` through.
      if (!spec || (options.gpuOnly && !spec.gpu)) continue;
      if (exact || anyGpuFamily || families.includes(spec.family)) specs.push(spec);
    }
    const next = response.NextToken;
    if (!next || next === token) return specs;
    token = next;
  }
  debug('DescribeInstanceTypes: stopped after %d pages', MAX_TYPE_PAGES);
  return specs;
}

export interface FindTypesOptions extends SizingRequest {
  clientFor: Ec2ClientFor;
  /** Regions to ask, in order, until one answers (type specs are the same everywhere). */
  regions: readonly string[];
  families?: readonly string[];
  instanceTypes?: readonly string[];
  signal?: AbortSignal;
}

/**
 * The candidate types for a request. DescribeInstanceTypes is asked in the first region that
 * answers: the specs of a type are global, while whether a region offers it shows up in its spot
 * prices.
 */
export async function findCandidateTypes(options: FindTypesOptions): Promise<TypeChoice> {
  validateWorkers(options.workers);
  let lastError: unknown;
  let specs: InstanceTypeSpec[] | undefined;
  for (const region of options.regions) {
    try {
      const client = await options.clientFor(region);
      specs = await describeInstanceTypes(client, {
        architecture: options.architecture,
        ...(options.families ? { families: options.families } : {}),
        ...(options.instanceTypes ? { instanceTypes: options.instanceTypes } : {}),
        ...(options.gpus && !options.instanceTypes?.length ? { gpuOnly: true } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      break;
    } catch (error) {
      if (options.signal?.aborted) throw error;
      if (isAbort(error)) throw error;
      debug('DescribeInstanceTypes in %s failed: %O', region, error);
      lastError = error;
      // An unknown --instance-type or bad credentials fail the same way in every region.
      const name = awsErrorName(error);
      if (name === 'InvalidInstanceType' || name === 'CredentialsProviderError' || name === 'UnauthorizedOperation') break;
    }
  }
  if (!specs) {
    throw awsUserError(lastError, {
      action: 'DescribeInstanceTypes',
      ...(options.regions[0] ? { region: options.regions[0] } : {}),
      ...(options.instanceTypes?.length === 1 ? { instanceType: options.instanceTypes[0] } : {}),
    });
  }
  const choice = options.instanceTypes?.length ? choosePinnedTypes(specs, options) : chooseTypes(specs, options);
  if (choice.types.length === 0) {
    if (options.gpus && !options.instanceTypes?.length) {
      const where = options.families ? ` in ${options.families.join(', ')}` : '';
      throw new UserError('SPOTCTL_CONFIG', `no ${options.architecture} spot instance type${where} has ${describeNeed(options)}`, {
        remediation: `see the GPU types AWS offers with: spotctl gpus${options.architecture === 'arm64' ? ' (and drop --arm: most GPU types are x86)' : ''}; then pick a model and count that exists (e.g. --gpus A10G or --gpus T4|L4), or fewer --workers`,
      });
    }
    const what = options.instanceTypes?.length
      ? options.instanceTypes.join(', ')
      : (options.families ?? DEFAULT_FAMILIES[options.architecture]).join(', ');
    const archHint =
      options.architecture === 'x86_64' ? ' (Graviton families such as c7g need --arm)' : ' (x86 families such as c7a need no --arm)';
    throw new UserError('SPOTCTL_CONFIG', `no ${options.architecture} spot instance type in ${what} fits ${describeNeed(options)}`, {
      remediation: `${choice.notes.length ? `${choice.notes.join('; ')}; ` : ''}try other families, e.g. spotctl prices --families c7a,m7a${archHint}, or fewer --workers`,
    });
  }
  return choice;
}
