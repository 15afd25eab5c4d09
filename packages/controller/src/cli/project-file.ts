/**
 * `spotctl.toml`, the project file: any `spotctl run` option by its long name, plus named profiles
 * (`[profile.NAME]`, chosen with `--profile NAME`). Its values enter commander's own option
 * definitions with the value source `config`, so every check a flag gets applies to them too and
 * there is no second list of keys to drift from the CLI. Precedence: flags, then the chosen
 * profile, then the file's top level, then the defaults.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command, Option } from 'commander';
import { parse, TomlError } from 'smol-toml';
import { SpotctlError, UserError } from '@spotctl/shared';

export const PROJECT_FILE = 'spotctl.toml';

/** Keys that choose or show the configuration rather than being part of it. */
const META_KEYS = new Set(['profile', 'show-config']);

/**
 * Options whose values are paths on this machine: in the file they are relative to the file's own
 * directory (so the file means the same from any subdirectory), not to where spotctl was started.
 */
const LOCAL_PATH_KEYS = new Set(['sync', 'identity', 'known-hosts', 'ssh-config', 'pull-to']);

/** Where an option's value came from, for `--show-config` and for errors. */
export interface ConfigOrigin {
  /** `spotctl.toml:7` or `spotctl.toml:12 [profile.big]`, relative to the current directory. */
  where: string;
  key: string;
  /** The option's flag, e.g. `--workers`. */
  flag: string;
}

/** The project file as applied to one command: where it is and which option each value set. */
export interface AppliedProjectFile {
  file: string;
  profile?: string;
  /** By commander attribute name. */
  origins: Map<string, ConfigOrigin>;
}

/** The nearest `spotctl.toml` from `startDir` upward (like git finds `.git`), or undefined. */
export function findProjectFile(startDir: string): string | undefined {
  let dir = path.resolve(startDir);
  for (;;) {
    const candidate = path.join(dir, PROJECT_FILE);
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function configError(where: string, message: string, remediation: string): UserError {
  return new UserError('SPOTCTL_CONFIG', `${where}: ${message}`, { remediation, exitCode: 2 });
}

function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel === '' || rel.startsWith('..') ? file : rel;
}

/** The 1-based line of `key` inside table `table` ('' = top level), found by reading the text. */
function lineOf(text: string, table: string, key: string): number | undefined {
  // smol-toml gives values, not positions; TOML's headers and keys are simple enough to locate
  // (the parse already succeeded, so the text is valid TOML).
  let current = '';
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    const header = /^\[\s*([^\]]+?)\s*\]/.exec(line);
    if (header && !line.startsWith('[[')) {
      current = (header[1] ?? '').replace(/\s*\.\s*/g, '.').replace(/["']/g, '');
      continue;
    }
    if (current !== table) continue;
    const keyMatch = /^(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=/.exec(line);
    if (keyMatch && (keyMatch[1] ?? keyMatch[2] ?? keyMatch[3]) === key) return i + 1;
  }
  return undefined;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j] ?? 0;
      row[j] = Math.min((row[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = saved;
    }
  }
  return row[b.length] ?? 0;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function tomlText(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
}

interface Placed {
  where: string;
  key: string;
  value: unknown;
}

/**
 * Converts one file value to what commander would have stored for the flag, using the option's
 * own definition: a boolean for a switch (`--no-x` inverted), a string for a value, each array
 * element through the option's parser for a repeatable one (`sync = ["a", "b"]`), `NAME=VALUE`
 * entries for a table (`env = { A = "1" }`), a comma list for a list-valued one (`regions = [...]`).
 */
function optionValue(option: Option, placed: Placed, dir: string): unknown {
  const { where, key, value } = placed;
  const flag = option.long ?? option.flags;
  const takesValue = option.required || option.optional;
  if (!takesValue) {
    if (typeof value !== 'boolean')
      throw configError(where, `${key} is a switch (${flag}), got ${tomlText(value)}`, `write ${key} = true (or false)`);
    return option.negate ? !value : value;
  }
  const scalar = (v: unknown): string => {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'bigint') return String(v);
    throw configError(
      where,
      `${key} wants text or a number (like ${flag} VALUE), got ${tomlText(v)}`,
      `write ${key} = "VALUE" (see: spotctl run --help)`,
    );
  };
  const resolvePath = (v: string): string =>
    LOCAL_PATH_KEYS.has(key) && v.trim() !== '' && !path.isAbsolute(v) && !v.startsWith('~') ? path.resolve(dir, v) : v;
  const check = (v: string): string => {
    if (option.argChoices && !option.argChoices.includes(v)) {
      throw configError(
        where,
        `${key} must be one of ${option.argChoices.join(', ')}, got ${tomlText(v)}`,
        `write e.g. ${key} = ${JSON.stringify(option.argChoices[0])}`,
      );
    }
    return resolvePath(v);
  };
  // An option's own parser may refuse a value (commander's InvalidArgumentError): say where it came from.
  const parsed = (fn: () => unknown): unknown => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof SpotctlError) throw error;
      const message = error instanceof Error ? error.message.replace(/^error:\s*/, '') : String(error);
      throw configError(where, `${key}: ${message}`, `fix ${key} (see: spotctl run --help)`);
    }
  };
  const repeatable = Array.isArray(option.defaultValue);
  if (repeatable) {
    let items: string[];
    if (Array.isArray(value)) items = value.map(scalar);
    else if (isTable(value)) items = Object.entries(value).map(([name, v]) => `${name}=${scalar(v)}`);
    else items = [scalar(value)];
    let acc: unknown = [];
    for (const item of items)
      acc = option.parseArg ? parsed(() => option.parseArg!(check(item), acc)) : [...(acc as unknown[]), check(item)];
    return acc;
  }
  if (isTable(value)) throw configError(where, `${key} wants one value (like ${flag} VALUE), not a table`, `write ${key} = "VALUE"`);
  const text = Array.isArray(value) ? value.map(scalar).join(',') : scalar(value);
  const checked = check(text);
  return option.parseArg ? parsed(() => option.parseArg!(checked, undefined)) : checked;
}

/** Reads and parses a project file; a TOML syntax error names its line. */
export function readProjectFile(file: string): { text: string; data: Record<string, unknown> } {
  const text = readFileSync(file, 'utf8');
  try {
    return { text, data: parse(text) as Record<string, unknown> };
  } catch (error) {
    if (error instanceof TomlError) {
      const first = error.message.split('\n')[0] ?? error.message;
      throw configError(
        `${displayPath(file)}:${error.line}`,
        `not valid TOML: ${first.replace(/^Invalid TOML document:\s*/i, '')}`,
        `fix line ${error.line} of ${displayPath(file)} (TOML syntax: https://toml.io)`,
      );
    }
    throw error;
  }
}

/**
 * Finds the project file from `cwd` upward and sets the values of the options it names (those the
 * user did not type) on `command`, with the value source `config`. `--profile NAME` (already
 * parsed onto `command`) adds `[profile.NAME]` on top of the top-level keys.
 */
export function applyProjectFile(command: Command, cwd: string = process.cwd()): AppliedProjectFile | undefined {
  const profile = command.getOptionValue('profile') as string | undefined;
  const file = findProjectFile(cwd);
  if (!file) {
    if (profile !== undefined) {
      throw new UserError('SPOTCTL_CONFIG', `--profile ${profile}: no ${PROJECT_FILE} here or in any parent directory`, {
        remediation: `create one with: spotctl init (then add a [profile.${profile}] table), or drop --profile`,
        exitCode: 2,
      });
    }
    return undefined;
  }
  const shown = displayPath(file);
  const { text, data } = readProjectFile(file);
  const byLong = new Map<string, Option>();
  for (const option of command.options) {
    if (option.long) byLong.set(option.long.replace(/^--/, ''), option);
  }
  const dir = path.dirname(file);
  const collectTable = (table: Record<string, unknown>, tableName: string, label: string): (Placed & { option: Option })[] =>
    Object.entries(table)
      .filter(([key]) => !(tableName === '' && key === 'profile'))
      .map(([key, value]) => {
        const line = lineOf(text, tableName, key);
        const where = `${shown}${line !== undefined ? `:${line}` : ''}${label}`;
        const option = META_KEYS.has(key) ? undefined : byLong.get(key);
        if (!option) {
          const known = [...byLong.keys()].filter((k) => !META_KEYS.has(k));
          const near = known.map((k) => [k, distance(key, k)] as const).sort((a, b) => a[1] - b[1])[0];
          const hint = near && near[1] <= 2 ? `did you mean ${near[0]}? ` : '';
          throw configError(
            where,
            `unknown key '${key}'`,
            `${hint}keys are spotctl run options by their long name (${known.join(', ')}); see: spotctl run --help`,
          );
        }
        return { where, key, value, option };
      });
  const chosen: (Placed & { option: Option })[] = [];
  const profiles = data.profile;
  if (profiles !== undefined && (!isTable(profiles) || !Object.values(profiles).every(isTable))) {
    const line = lineOf(text, '', 'profile');
    throw configError(
      `${shown}${line !== undefined ? `:${line}` : ''}`,
      'profile must hold tables: [profile.NAME]',
      'write each profile as a table, e.g. [profile.big] then workers = 16',
    );
  }
  const top = collectTable(data, '', '');
  if (profile !== undefined) {
    const table = isTable(profiles) ? profiles[profile] : undefined;
    if (!isTable(table)) {
      const names = isTable(profiles) ? Object.keys(profiles) : [];
      throw new UserError('SPOTCTL_CONFIG', `--profile ${profile}: ${shown} has no [profile.${profile}]`, {
        remediation: names.length
          ? `use one of: ${names.map((n) => `--profile ${n}`).join(', ')}`
          : `add a [profile.${profile}] table to ${shown}, or drop --profile`,
        exitCode: 2,
      });
    }
    chosen.push(...collectTable(table, `profile.${profile}`, ` [profile.${profile}]`));
  }
  // Every profile is checked, chosen or not: a typo must not wait for the day the profile is used.
  if (isTable(profiles)) {
    for (const [name, table] of Object.entries(profiles)) {
      if (name === profile || !isTable(table)) continue;
      for (const placed of collectTable(table, `profile.${name}`, ` [profile.${name}]`)) optionValue(placed.option, placed, dir);
    }
  }
  const placements = new Map<string, Placed & { option: Option }>();
  for (const placed of [...top, ...chosen]) placements.set(placed.option.attributeName(), placed);
  const origins = new Map<string, ConfigOrigin>();
  for (const [attr, placed] of placements) {
    const value = optionValue(placed.option, placed, dir);
    const source = command.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') continue;
    command.setOptionValueWithSource(attr, value, 'config');
    origins.set(attr, { where: placed.where, key: placed.key, flag: placed.option.long ?? placed.option.flags });
  }
  return { file, ...(profile !== undefined ? { profile } : {}), origins };
}

/**
 * A check that refused a value names its flag (`--workers must be …`); when that value came from
 * the project file, the error says so, with the file's line and key, and keeps the fix.
 */
export function attributeToProjectFile(error: unknown, applied: AppliedProjectFile | undefined): unknown {
  if (!applied || !(error instanceof SpotctlError)) return error;
  // The flag the message names first is the one it is about (`--workers only applies to --provider aws`).
  const named = [...applied.origins.values()]
    .map((origin) => ({ origin, at: new RegExp(`${origin.flag}(?![\\w-])`).exec(error.message)?.index ?? -1 }))
    .filter((m) => m.at >= 0)
    .sort((a, b) => a.at - b.at)[0];
  if (named) {
    const { origin } = named;
    const remediation = error.remediation
      ? `fix ${origin.key} in ${PROJECT_FILE} (${error.remediation})`
      : `fix ${origin.key} in ${PROJECT_FILE}`;
    return new UserError(error.code, `${origin.where}: ${origin.key}: ${error.message}`, {
      remediation,
      exitCode: error instanceof UserError ? error.exitCode : 2,
      cause: error,
    });
  }
  return error;
}

/** One option's merged value and where it came from, for `spotctl run --show-config`. */
export interface ConfigSetting {
  /** The long name, as a file key and a flag (`--workers`). */
  key: string;
  value: unknown;
  /** `flag`, `env`, `default`, or the file's `spotctl.toml:LINE [profile.NAME]`. */
  source: string;
}

/** Every option that has a value, as the command will see it, with where each came from. */
export function describeSettings(command: Command, applied: AppliedProjectFile | undefined): ConfigSetting[] {
  const values = command.opts();
  const settings: ConfigSetting[] = [];
  for (const option of command.options) {
    if (!option.long) continue;
    const key = option.long.replace(/^--/, '');
    if (META_KEYS.has(key)) continue;
    const attr = option.attributeName();
    const raw: unknown = values[attr];
    if (raw === undefined || (Array.isArray(raw) && raw.length === 0)) continue;
    const value = option.negate ? !raw : raw;
    const source = command.getOptionValueSource(attr);
    settings.push({ key, value, source: applied?.origins.get(attr)?.where ?? (source === 'cli' ? 'flag' : (source ?? 'default')) });
  }
  return settings;
}
