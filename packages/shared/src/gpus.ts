/**
 * GPUs as the agent sees them and as a run asks for them. The agent probes with nvidia-smi and
 * reports what it found in its hello; when the run asked for GPUs it also checks them before the
 * job starts (`gpuShortfall`), so a job never starts on a machine without the GPUs it was priced for.
 */
import { Type, type Static } from '@sinclair/typebox';

/** One GPU as `nvidia-smi --query-gpu=name,memory.total` reports it. */
export const GpuSeen = Type.Object(
  {
    /** `NVIDIA A10G`, `Tesla T4`, `NVIDIA L4`. */
    name: Type.String(),
    memoryMiB: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export type GpuSeen = Static<typeof GpuSeen>;

/** What the run asked for (`--gpus`, `--gpu-memory`), for the agent to check before the job starts. */
export const GpuRequirement = Type.Object(
  {
    /** Exact number of GPUs. */
    count: Type.Integer({ minimum: 1 }),
    /** Accepted models as AWS names them (`A10G`, `T4`); matched as a word of nvidia-smi's name. */
    names: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
    /** Minimum memory of each GPU. */
    minMemoryMiB: Type.Optional(Type.Integer({ minimum: 1 })),
    /** The machine, for the error: `g5.xlarge (image ami-…)` on EC2, the host name elsewhere. */
    where: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type GpuRequirement = Static<typeof GpuRequirement>;

function modelMatches(seenName: string, names: readonly string[]): boolean {
  const words = seenName.toUpperCase().split(/[\s-]+/);
  return names.some((n) => words.includes(n.toUpperCase()));
}

/**
 * Why the GPUs seen do not satisfy the requirement, or undefined when they do. Fewer GPUs than
 * asked, the wrong model or too little memory all count; more matching GPUs than asked do not
 * (the job can use a subset; CUDA_VISIBLE_DEVICES is the user's).
 */
export function gpuShortfall(required: GpuRequirement, seen: readonly GpuSeen[], probeError?: string): string | undefined {
  const wanted = `${required.count} GPU${required.count === 1 ? '' : 's'}${required.names ? ` (${required.names.join(' or ')})` : ''}${
    required.minMemoryMiB === undefined ? '' : ` with ≥ ${required.minMemoryMiB} MiB each`
  }`;
  const on = required.where ? ` on ${required.where}` : '';
  if (seen.length === 0) return `the run asked for ${wanted} but the agent sees no GPU${on}${probeError ? ` (${probeError})` : ''}`;
  const fit = seen.filter(
    (g) =>
      (!required.names || modelMatches(g.name, required.names)) &&
      (required.minMemoryMiB === undefined || g.memoryMiB >= required.minMemoryMiB),
  );
  if (fit.length >= required.count) return undefined;
  const have = seen.map((g) => `${g.name} ${g.memoryMiB} MiB`).join(', ');
  return `the run asked for ${wanted} but the agent sees ${have}${on}`;
}
