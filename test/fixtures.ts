/** Small job scripts the end-to-end tests run. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Prints N numbered stdout lines, one stderr line per 1000, then exits with `code`. */
export const NUMBERED = `
import sys, time
n = int(sys.argv[1]); code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
pace = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
for i in range(1, n + 1):
    sys.stdout.write(f"line {i}\\n")
    if i % 1000 == 0:
        sys.stderr.write(f"progress {i}\\n")
        if pace:
            sys.stdout.flush(); time.sleep(pace)
sys.exit(code)
`;

export function writeProject(dir: string, files: Record<string, string>): string {
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  return dir;
}

/** Asserts stdout is exactly `line 1` … `line n`, each once, in order; returns a short report. */
export function numberedLines(stdout: string): number[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('line '))
    .map((l) => Number(l.slice(5)));
}

export function checkSequence(seen: number[], n: number): { lost: number; duplicated: number; outOfOrder: number } {
  const counts = new Map<number, number>();
  let outOfOrder = 0;
  for (let i = 0; i < seen.length; i++) {
    const v = seen[i] as number;
    counts.set(v, (counts.get(v) ?? 0) + 1);
    if (i > 0 && v <= (seen[i - 1] as number)) outOfOrder++;
  }
  let lost = 0;
  let duplicated = 0;
  for (let i = 1; i <= n; i++) {
    const c = counts.get(i) ?? 0;
    if (c === 0) lost++;
    if (c > 1) duplicated += c - 1;
  }
  return { lost, duplicated, outOfOrder };
}
