import type { BuildOptions } from 'esbuild';

export function buildAll(options?: { quiet?: boolean }): Promise<void>;
export function cliBuildOptions(quiet: boolean): BuildOptions & { metafile: true };
