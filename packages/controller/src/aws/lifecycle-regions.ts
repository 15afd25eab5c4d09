/**
 * Which regions `ls`, `teardown` and `gc` look in: the candidate regions (`--regions`, `--region`,
 * AWS_REGION, else the default eight), plus every region where a run recorded on this machine
 * may still have an instance, so nothing launched from here is missed.
 */
import type { RunStore } from '../runs/run-store.ts';
import { resolveRegions } from './pricing.ts';

export interface RegionFlags {
  regions?: string;
  region?: string;
}

export function lifecycleRegions(flags: RegionFlags, store?: RunStore): string[] {
  const selection = resolveRegions({
    ...(flags.regions === undefined ? {} : { regions: flags.regions }),
    ...(flags.region === undefined ? {} : { region: flags.region }),
  });
  const regions = new Set(selection.regions);
  // Explicit flags mean exactly those regions.
  if (flags.regions === undefined && flags.region === undefined && store) {
    for (const record of store.list()) if (record.aws && !record.aws.terminatedAt) regions.add(record.aws.region);
  }
  return [...regions];
}
