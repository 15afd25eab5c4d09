export { probeGpus, parseNvidiaSmi, GPU_PROBE_TIMEOUT_MS, type GpuProbe, type GpuProbeOptions } from './probe.ts';
