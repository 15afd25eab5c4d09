/**
 * The only module that prints. Job output goes to stdout/stderr untouched; spotctl's own
 * progress goes to stderr (pretty on a TTY), or everything becomes JSON lines on stdout with --json.
 */
import { batchLines, type LogBatch, type LogLine } from '@spotctl/shared';

export interface OutputOptions {
  /** Emit JSON lines on stdout instead of human text. @default false */
  json?: boolean;
  /** @default process.stdout */
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  /** @default process.stderr */
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
}

export type Writable = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/**
 * A step under way. On a TTY it is one stderr line, redrawn (spinner, message, elapsed time) and
 * cleared when the step ends; with --json it becomes `step-progress` events; otherwise nothing.
 */
export interface Progress extends Disposable {
  /** What the step is doing now (`syncing: 12.3 MB, 40%`, `Collecting numpy`). */
  update(message: string, fields?: Record<string, unknown>): void;
  /** Clears the line; idempotent. */
  end(): void;
  /** True when this progress is drawn on a terminal (raw setup output would garble it). */
  readonly live: boolean;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/** How often the TTY line is redrawn (spinner and elapsed time). */
const PROGRESS_REDRAW_MS = 100;
/** At most one `step-progress` event per step this often (the first and the last always go). */
const PROGRESS_EVENT_MS = 500;

export class Output {
  readonly json: boolean;
  private readonly out: Writable;
  private readonly err: Writable;
  private readonly color: boolean;
  private readonly tty: boolean;
  /** The progress line currently drawn on the TTY, redrawn after anything else is printed. */
  private progressLine: (() => string) | undefined;

  constructor(options: OutputOptions = {}) {
    this.json = options.json ?? false;
    this.out = options.stdout ?? process.stdout;
    this.err = options.stderr ?? process.stderr;
    this.tty = Boolean(this.err.isTTY) && process.env.TERM !== 'dumb';
    this.color = this.tty && !process.env.NO_COLOR;
  }

  /** Writes to stderr, keeping a progress line (if any) below what is printed. */
  private writeErr(text: string): boolean {
    if (!this.progressLine) return this.err.write(text);
    this.err.write('\r\u001b[2K');
    const ok = this.err.write(text);
    this.drawProgress();
    return ok;
  }

  private drawProgress(): void {
    if (!this.progressLine) return;
    const width = Math.max(20, (this.err.columns || 80) - 1);
    let line = this.progressLine();
    // Count code points, not UTF-16 units: a line wider than the terminal wraps and cannot be redrawn.
    if ([...line].length > width) line = `${[...line].slice(0, width - 1).join('')}…`;
    this.err.write(`\r\u001b[2K${this.paint('36', line)}`);
  }

  /**
   * Shows a step under way until `end()` (or disposal). Progress goes to stderr on a TTY only;
   * with --json it is `step-progress` events; piped text output shows nothing extra.
   */
  progress(step: string, message: string): Progress {
    const started = performance.now();
    let current = message;
    let ended = false;
    if (this.json) {
      let lastEmit = 0;
      let pending: Record<string, unknown> | undefined;
      const send = (fields: Record<string, unknown>) => {
        lastEmit = performance.now();
        pending = undefined;
        this.emit({ type: 'step-progress', step, message: current, elapsedMs: Math.round(lastEmit - started), ...fields });
      };
      send({});
      return {
        live: false,
        update: (m, fields = {}) => {
          if (ended) return;
          current = m;
          if (performance.now() - lastEmit >= PROGRESS_EVENT_MS) send(fields);
          else pending = fields;
        },
        end: () => {
          if (ended) return;
          ended = true;
          if (pending) send(pending);
        },
        [Symbol.dispose]() {
          this.end();
        },
      };
    }
    if (!this.tty || this.progressLine) {
      // Not a terminal (or a step inside a step, which keeps the outer line): nothing extra.
      return { live: false, update: () => undefined, end: () => undefined, [Symbol.dispose]: () => undefined };
    }
    let frame = 0;
    const render = () => `${SPINNER[frame % SPINNER.length]} ${current} (${formatDuration(performance.now() - started)})`;
    this.progressLine = render;
    this.drawProgress();
    const timer = setInterval(() => {
      frame++;
      this.drawProgress();
    }, PROGRESS_REDRAW_MS);
    timer.unref();
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      if (this.progressLine === render) {
        this.progressLine = undefined;
        this.err.write('\r\u001b[2K');
      }
    };
    return {
      live: true,
      update: (m) => {
        if (ended) return;
        current = m;
      },
      end,
      [Symbol.dispose]: end,
    };
  }

  private paint(code: string, text: string): string {
    return this.color ? `\u001b[${code}m${text}\u001b[0m` : text;
  }

  private emit(event: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify({ ts: Date.now(), ...event })}\n`);
  }

  /** A lifecycle message of spotctl itself. */
  info(message: string, fields: Record<string, unknown> = {}): void {
    if (this.json) this.emit({ type: 'info', message, ...fields });
    else this.writeErr(`${this.paint('2', 'spotctl')} ${message}\n`);
  }

  warn(message: string, fields: Record<string, unknown> = {}): void {
    if (this.json) this.emit({ type: 'warning', message, ...fields });
    else this.writeErr(`${this.paint('33', 'spotctl warning:')} ${message}\n`);
  }

  /** A finished step with its duration. */
  step(step: string, message: string, durationMs: number): void {
    if (this.json) this.emit({ type: 'step', step, message, durationMs });
    else this.writeErr(`${this.paint('32', '✓')} ${message} ${this.paint('2', `(${formatDuration(durationMs)})`)}\n`);
  }

  /** Raw text from a setup step (dependency install) shown as progress. */
  setupOutput(chunk: string): void {
    if (this.json) this.emit({ type: 'setup-output', text: chunk });
    else this.writeErr(this.paint('2', chunk));
  }

  /**
   * Job lines, in seq order. Returns false when stdout is full, so the caller can pause the
   * stream until `drain`.
   */
  lines(lines: readonly LogLine[]): boolean {
    if (this.json) {
      let buf = '';
      for (const l of lines) buf += `${JSON.stringify({ type: 'log', ...l })}\n`;
      return this.out.write(buf);
    }
    let ok = true;
    let run = '';
    let runStream: string | undefined;
    const flush = () => {
      if (!run) return;
      const target = runStream === 'stdout' ? this.out : this.err;
      ok = target.write(run) && ok;
      run = '';
    };
    for (const l of lines) {
      const stream = l.stream === 'stdout' ? 'stdout' : 'stderr';
      if (stream !== runStream) {
        flush();
        runStream = stream;
      }
      run += `${l.text}\n`;
    }
    flush();
    return ok;
  }

  /**
   * A batch of job lines, in seq order: each segment goes out as its bytes, stdout's to stdout and
   * everything else to stderr (JSON lines with --json). Segments are written one by one rather
   * than concatenated: a copy per batch cost more than the extra writes. Returns false when a
   * stream is full, so the caller can pause until `drain`.
   */
  batch(batch: LogBatch): boolean {
    if (this.json) return this.lines(batchLines(batch));
    let ok = true;
    for (const s of batch.segments) ok = (s.stream === 'stdout' ? this.out : this.err).write(s.data) && ok;
    return ok;
  }

  /** Resolves when stdout can take more. */
  drain(): Promise<void> {
    return new Promise((resolve) => this.out.once('drain', () => resolve()));
  }

  /** The final result of a run. */
  result(fields: Record<string, unknown>, human: string): void {
    if (this.json) this.emit({ type: 'result', ...fields });
    else this.writeErr(`${this.paint('2', 'spotctl')} ${human}\n`);
  }

  /** Plain data for read commands (ps, logs): JSON with --json, else the given text. */
  data(value: unknown, human: string): void {
    if (this.json) this.out.write(`${JSON.stringify(value)}\n`);
    else this.out.write(human.endsWith('\n') ? human : `${human}\n`);
  }

  /** One-line error (plus remediation on the same line). */
  error(message: string, remediation?: string, code?: string): void {
    if (this.json) {
      this.emit({ type: 'error', code, message, remediation });
      return;
    }
    const tail = remediation ? ` ${this.paint('2', '→')} ${remediation}` : '';
    this.writeErr(`${this.paint('31', 'spotctl error:')} ${message}${tail}\n`);
  }

  /** Stack traces only with DEBUG set. */
  debugDetail(text: string): void {
    this.err.write(`${text}\n`);
  }
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const totalS = Math.round(ms / 1000);
  const m = Math.floor(totalS / 60);
  const s = totalS % 60;
  return m < 60 ? `${m}m${String(s).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** A simple aligned table; cli-table3 would be heavier than this needs. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ');
  return [fmt(headers), ...rows.map(fmt)].join('\n');
}
