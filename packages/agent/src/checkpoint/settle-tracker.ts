/**
 * Settle tracking: what is known about each file of the watched folder, and when a file has
 * settled (size and mtime unchanged for `settleMs`). It decides nothing else: a settled file is
 * handed to `onSettled` (the upload queue), a vanished one to `onForgotten`.
 */
import type { Stats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { ManifestFile } from '@spotctl/shared';
import type { Clock } from '../clock.ts';

/** What is known about one file of the watched folder. */
export interface Entry {
  /** Path relative to the folder, with forward slashes. */
  rel: string;
  /** The last size and mtime seen. */
  size: number;
  mtimeMs: number;
  /** When size or mtime last changed. */
  changedAt: number;
  /** Fires `settleMs` after the last change. */
  timer: unknown;
  /** The newest version whose object is confirmed in the store. */
  uploaded: ManifestFile | undefined;
  /** Queued or being uploaded. */
  busy: boolean;
  /** Asked for again while busy: look once more when done. */
  again: boolean;
  failures: number;
  lastError: string | undefined;
  /**
   * A digest taken ahead of the upload (during a flush's re-check pause), valid while the file's
   * size and mtime are these. Only saves re-hashing: the upload still verifies that the bytes it
   * sends are the ones this digest describes.
   */
  hashed: { sha256: string; size: number; mtimeMs: number } | undefined;
  /** That hashing while it runs, so an upload waits for it instead of hashing the file again. */
  hashing: Promise<void> | undefined;
}

export type CheckpointClock = Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;

export function toRel(dir: string, file: string): string {
  return path.relative(dir, file).split(path.sep).join('/');
}

export function isUpToDate(entry: Entry): boolean {
  return entry.uploaded !== undefined && entry.uploaded.size === entry.size && entry.uploaded.mtimeMs === entry.mtimeMs;
}

export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export interface SettleTrackerOptions {
  dir: string;
  settleMs: number;
  ignore: readonly RegExp[];
  clock: CheckpointClock;
  /** Settled and not uploaded in this version: upload it. */
  onSettled(entry: Entry): void;
  /** Settled, and that version is already in the store: maybe time for a commit. */
  onSettledUpToDate(): void;
  /** Deleted (or no longer a file). */
  onForgotten(entry: Entry): void;
}

export class SettleTracker {
  readonly #o: SettleTrackerOptions;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(options: SettleTrackerOptions) {
    this.#o = options;
  }

  get entries(): ReadonlyMap<string, Entry> {
    return this.#entries;
  }

  get settleMs(): number {
    return this.#o.settleMs;
  }

  isIgnored(basename: string): boolean {
    return this.#o.ignore.some((re) => re.test(basename));
  }

  /** Bytes of files seen but not yet uploaded in their current version. */
  pendingBytes(): number {
    let bytes = 0;
    for (const entry of this.#entries.values()) if (!isUpToDate(entry)) bytes += entry.size;
    return bytes;
  }

  /** Some file not yet uploaded is still settling. */
  settling(): boolean {
    for (const e of this.#entries.values()) if (e.timer !== undefined && !isUpToDate(e)) return true;
    return false;
  }

  observe(rel: string, size: number, mtimeMs: number): void {
    if (this.#closed) return;
    let entry = this.#entries.get(rel);
    const now = this.#o.clock.now();
    if (!entry) {
      entry = {
        rel,
        size,
        mtimeMs,
        changedAt: now,
        timer: undefined,
        uploaded: undefined,
        busy: false,
        again: false,
        failures: 0,
        lastError: undefined,
        hashed: undefined,
        hashing: undefined,
      };
      this.#entries.set(rel, entry);
    } else if (entry.size !== size || entry.mtimeMs !== mtimeMs) {
      entry.size = size;
      entry.mtimeMs = mtimeMs;
      entry.changedAt = now;
      entry.failures = 0;
    } else if (entry.timer !== undefined || entry.busy) {
      // Same stat again: the armed timer, or the upload in progress, already covers it.
      return;
    }
    if (isUpToDate(entry)) {
      this.clearTimer(entry);
      return;
    }
    this.arm(entry, Math.max(0, entry.changedAt + this.#o.settleMs - now));
  }

  /** Looks at the file again after `delayMs` (its settle time, or a failure's backoff). */
  arm(entry: Entry, delayMs: number): void {
    this.clearTimer(entry);
    entry.timer = this.#o.clock.setTimeout(() => {
      entry.timer = undefined;
      void this.#checkSettled(entry.rel);
    }, delayMs);
  }

  /** Re-arms the settle timer for what is left of the window since the file last changed. */
  rearm(entry: Entry): void {
    this.arm(entry, Math.max(0, entry.changedAt + this.#o.settleMs - this.#o.clock.now()));
  }

  clearTimer(entry: Entry): void {
    if (entry.timer !== undefined) this.#o.clock.clearTimeout(entry.timer);
    entry.timer = undefined;
  }

  async restat(rel: string): Promise<void> {
    try {
      const st = await lstat(path.join(this.#o.dir, rel));
      if (st.isFile()) this.observe(rel, st.size, st.mtimeMs);
    } catch (err) {
      if (isNotFound(err)) this.forget(rel);
    }
  }

  /** The settle timer fired: hand the file on if it has not changed since the last event. */
  async #checkSettled(rel: string): Promise<void> {
    const entry = this.#entries.get(rel);
    if (!entry || this.#closed) return;
    let st: Stats;
    try {
      st = await lstat(path.join(this.#o.dir, rel));
    } catch (err) {
      if (isNotFound(err)) this.forget(rel);
      return;
    }
    if (!st.isFile()) return this.forget(rel);
    if (st.size !== entry.size || st.mtimeMs !== entry.mtimeMs) {
      this.observe(rel, st.size, st.mtimeMs);
      return;
    }
    if (isUpToDate(entry)) {
      this.#o.onSettledUpToDate();
      return;
    }
    this.#o.onSettled(entry);
  }

  forget(rel: string): void {
    const entry = this.#entries.get(rel);
    if (!entry) return;
    this.clearTimer(entry);
    this.#entries.delete(rel);
    this.#o.onForgotten(entry);
  }

  /** Forgets every file under the folder `relDir`. */
  forgetUnder(relDir: string): void {
    const prefix = `${relDir}/`;
    for (const rel of [...this.#entries.keys()]) if (rel.startsWith(prefix)) this.forget(rel);
  }

  /** Walks the folder: the watcher may lag behind, a flush must not. */
  async rescan(signal: AbortSignal): Promise<void> {
    const seen = new Set<string>();
    const walk = async (absDir: string, depth: number): Promise<void> => {
      signal.throwIfAborted();
      if (depth > 64) return;
      let names: string[];
      try {
        names = await readdir(absDir);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      for (const name of names) {
        if (this.isIgnored(name)) continue;
        const abs = path.join(absDir, name);
        let st: Stats;
        try {
          st = await lstat(abs);
        } catch (err) {
          if (isNotFound(err)) continue;
          throw err;
        }
        if (st.isDirectory()) await walk(abs, depth + 1);
        else if (st.isFile()) {
          const rel = toRel(this.#o.dir, abs);
          seen.add(rel);
          this.observe(rel, st.size, st.mtimeMs);
        }
      }
    };
    await walk(this.#o.dir, 0);
    for (const rel of [...this.#entries.keys()]) if (!seen.has(rel)) this.forget(rel);
  }

  /** Size and mtime now, or undefined if the file is gone. */
  async statOf(rel: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    try {
      const st = await lstat(path.join(this.#o.dir, rel));
      return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Stops every timer; later observations are ignored. */
  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) this.clearTimer(entry);
  }
}
