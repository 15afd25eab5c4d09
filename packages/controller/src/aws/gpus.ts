/**
 * GPUs: `--gpus SPEC` and `--gpu-memory SIZE`, matched against the `GpuInfo` DescribeInstanceTypes
 * returns for each type (name, manufacturer, count, memory per GPU). There is no table of GPU
 * types in here: what a type carries comes from AWS, so a new family is usable the day AWS lists it.
 *
 * SPEC forms: `1` (one NVIDIA GPU, any model), `A10G` (one A10G), `L4:1`, `A100:8` (exactly eight),
 * `T4|L4` (any of these). The count is exact, not a minimum: a run asking for one GPU should not
 * be priced on a four-GPU machine that happens to be in the same family. Only NVIDIA GPUs are
 * matched: the image spotctl launches GPU runs on (the Deep Learning Base image) carries NVIDIA's
 * driver and CUDA, nothing for AMD or Gaudi.
 */
import { UserError } from '@spotctl/shared';
import type { InstanceTypeInfo } from '@aws-sdk/client-ec2';

/** The manufacturer `--gpus` matches (see the file comment). */
export const GPU_MANUFACTURER = 'NVIDIA';
/** Largest GPU count any EC2 type has today is 8 (16 on a few accelerator types); leaves room. */
export const MAX_GPU_COUNT = 64;
/**
 * Server-side narrowing for DescribeInstanceTypes: every EC2 family with NVIDIA GPUs is a `g` or a
 * `p` family (g4dn, g5, g6, g6e, p3, p4d, p5…). The GpuInfo check on each answer decides; this only
 * saves pages.
 */
export const GPU_FAMILY_PATTERNS: readonly string[] = ['g*', 'p*'];

/** What one instance type carries, from its GpuInfo. */
export interface GpuInfo {
  /** As AWS names it: `T4`, `A10G`, `L4`, `A100`, `H100`. */
  name: string;
  manufacturer: string;
  count: number;
  /** Memory of one GPU. */
  memoryMiB: number;
}

/** A parsed `--gpus` / `--gpu-memory` request. */
export interface GpuRequest {
  /** Accepted model names, upper-case; undefined = any NVIDIA GPU. */
  names?: string[];
  /** Exact number of GPUs. @default 1 */
  count: number;
  /** Minimum memory per GPU (`--gpu-memory`). */
  minMemoryMiB?: number;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
const GPUS_EXAMPLE = 'for example: --gpus 1, --gpus A10G, --gpus A100:8 or --gpus "T4|L4"';

function usage(message: string, remediation: string): UserError {
  return new UserError('SPOTCTL_USAGE', message, { remediation, exitCode: 2 });
}

function parseCount(text: string, spec: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_GPU_COUNT)
    throw usage(`--gpus '${spec}': the GPU count must be a whole number from 1 to ${MAX_GPU_COUNT}`, GPUS_EXAMPLE);
  return n;
}

/** `--gpus SPEC` → the GPU models and count (see the file comment for the forms). */
export function parseGpuSpec(spec: string): Pick<GpuRequest, 'names' | 'count'> {
  const text = spec.trim();
  if (text === '') throw usage('--gpus is empty', GPUS_EXAMPLE);
  if (/^\d+$/.test(text)) return { count: parseCount(text, spec) };
  const [models = '', countText, extra] = text.split(':');
  if (extra !== undefined) throw usage(`--gpus '${spec}' has more than one ':'`, GPUS_EXAMPLE);
  const names = models.split('|').map((n) => n.trim());
  const bad = names.find((n) => !NAME_RE.test(n));
  if (bad !== undefined)
    throw usage(`--gpus '${spec}' has an invalid GPU name '${bad}'`, `${GPUS_EXAMPLE}; spotctl gpus lists the names AWS uses`);
  return {
    names: [...new Set(names.map((n) => n.toUpperCase()))],
    count: countText === undefined ? 1 : parseCount(countText.trim(), spec),
  };
}

const MEMORY_UNITS_MIB: Readonly<Record<string, number>> = {
  m: 1,
  mb: 1,
  mib: 1,
  g: 1024,
  gb: 1024,
  gib: 1024,
  t: 1024 * 1024,
  tb: 1024 * 1024,
  tib: 1024 * 1024,
};

/** `--gpu-memory 20G` → MiB per GPU. G is GiB, as nvidia-smi and AWS count (an A10G's 22888 MiB is 22.4G). */
export function parseGpuMemory(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i.exec(value.trim());
  const factor = match ? MEMORY_UNITS_MIB[(match[2] ?? '').toLowerCase()] : undefined;
  const mib = match && factor !== undefined ? Math.ceil(Number(match[1]) * factor) : NaN;
  if (!Number.isFinite(mib) || mib < 1) {
    throw usage(
      `--gpu-memory must be a size with a unit, got '${value}'`,
      'for example: --gpu-memory 20G (memory of each GPU; M, G and T are accepted)',
    );
  }
  return mib;
}

/** Both flags together; undefined when neither is given. `--gpu-memory` alone means one GPU of any model with that memory. */
export function parseGpuRequest(options: { gpus?: string; gpuMemory?: string }): GpuRequest | undefined {
  if (options.gpus === undefined && options.gpuMemory === undefined) return undefined;
  const base = options.gpus === undefined ? { count: 1 } : parseGpuSpec(options.gpus);
  return { ...base, ...(options.gpuMemory === undefined ? {} : { minMemoryMiB: parseGpuMemory(options.gpuMemory) }) };
}

/** Reads a type's GpuInfo; undefined when it has no GPU. Several GPU entries of one model add up. */
export function gpuInfoOf(info: InstanceTypeInfo): GpuInfo | undefined {
  const gpus = info.GpuInfo?.Gpus ?? [];
  const first = gpus[0];
  if (!first?.Name) return undefined;
  const count = gpus.reduce((sum, g) => sum + (g.Count ?? 0), 0);
  if (count < 1) return undefined;
  return { name: first.Name, manufacturer: first.Manufacturer ?? 'unknown', count, memoryMiB: first.MemoryInfo?.SizeInMiB ?? 0 };
}

/** Why a type's GPUs don't match the request, or undefined when they do. */
export function gpuMismatch(instanceType: string, gpu: GpuInfo | undefined, request: GpuRequest): string | undefined {
  if (!gpu) return `${instanceType} has no GPU`;
  if (gpu.manufacturer.toUpperCase() !== GPU_MANUFACTURER)
    return `${instanceType} has ${gpu.manufacturer} GPUs, spotctl runs GPU jobs on NVIDIA only`;
  if (request.names && !request.names.includes(gpu.name.toUpperCase()))
    return `${instanceType} has ${gpu.name}, not ${request.names.join(' or ')}`;
  if (gpu.count !== request.count) return `${instanceType} has ${gpu.count} GPU${gpu.count === 1 ? '' : 's'}, ${request.count} asked for`;
  if (request.minMemoryMiB !== undefined && gpu.memoryMiB < request.minMemoryMiB) {
    return `${instanceType}'s ${gpu.name} has ${formatGpuMemory(gpu.memoryMiB)}, ${formatGpuMemory(request.minMemoryMiB)} asked for`;
  }
  return undefined;
}

/** 22888 → "22.4G". */
export function formatGpuMemory(mib: number): string {
  const g = mib / 1024;
  return `${Number.isInteger(g) ? g : g.toFixed(1)}G`;
}

/** "1× A10G", "8× A100 ≥ 40G", "1× any NVIDIA GPU". */
export function describeGpuRequest(request: GpuRequest): string {
  const model = request.names ? request.names.join('|') : `${GPU_MANUFACTURER} GPU`;
  return `${request.count}× ${model}${request.minMemoryMiB === undefined ? '' : ` with ≥ ${formatGpuMemory(request.minMemoryMiB)} each`}`;
}
