/**
 * Suites that need something from the machine (root, network namespaces, moto_server, curl) skip
 * themselves when it is missing, with a printed reason, so a laptop without them still runs the
 * rest. Under CI (`CI=true`, set by .ci/run) a missing prerequisite fails instead: a suite that
 * skips on CI is a suite that silently never runs.
 */

/** True when the environment says it is CI (`CI=true` or `CI=1`, as CI services set it). */
export function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^(true|1)$/i.test(env.CI ?? '');
}

/**
 * Decides what a suite does about a missing prerequisite (`missing` is why, or undefined when
 * nothing is missing). Returns whether to skip; prints the reason when it does. Throws under CI.
 */
export function skipUnlessCi(
  suite: string,
  missing: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  warn: (line: string) => void = console.warn,
): boolean {
  if (missing === undefined) return false;
  if (isCi(env)) {
    throw new Error(
      `[${suite}] cannot run under CI: ${missing}. CI must not skip it: run as root with iproute2, openssh-server, curl and moto_server installed (bash .ci/run installs them)`,
    );
  }
  warn(`[${suite}] skipped: ${missing} (under CI=true this fails instead)`);
  return true;
}
