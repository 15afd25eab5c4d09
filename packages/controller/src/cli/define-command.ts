/**
 * The command registry's one shape: each command file exports `defineCommand({...})`, and
 * main.ts turns the list into commander commands with descriptions and examples in --help.
 */
import type { Command } from 'commander';
import { Output } from '../output/output.ts';
import { RunStore } from '../runs/run-store.ts';
import type { TestOverrides } from '../providers/test-overrides.ts';
import type { AppliedProjectFile, ConfigSetting } from './project-file.ts';

export interface CommandContext {
  out: Output;
  store: RunStore;
  /** Test-only settings (`SPOTCTL_TEST_*`), read once by main.ts; empty in normal use. */
  testOverrides: TestOverrides;
  /**
   * True when the user typed the option (by its attribute name, e.g. `instanceType`), false for a
   * default. Absent when a command runs in-process without commander (tests): nothing was typed.
   */
  given?: (attributeName: string) => boolean;
  /** The project file (`spotctl.toml`) whose values the options hold, when the command reads one. */
  projectFile?: AppliedProjectFile;
  /** Commands that read the project file: every option's merged value and its source. */
  settings?: ConfigSetting[];
}

export interface CommandDefinition<O extends Record<string, unknown> = Record<string, unknown>> {
  name: string;
  description: string;
  /** Shown under "Examples" in --help: each is a full command line. */
  examples: string[];
  /** Adds arguments and options to the commander command. */
  configure: (command: Command) => void;
  /** Reads `spotctl.toml` (found upward from the current directory) into its options. @default false */
  projectFile?: boolean;
  /** Returns the process exit code. */
  run: (args: string[], options: O, ctx: CommandContext) => Promise<number>;
}

export function defineCommand<O extends Record<string, unknown>>(definition: CommandDefinition<O>): CommandDefinition<O> {
  return definition;
}

export function contextFor(
  options: { json?: unknown },
  testOverrides: TestOverrides,
  given: (attributeName: string) => boolean = () => false,
): CommandContext {
  return { out: new Output({ json: options.json === true }), store: new RunStore(), testOverrides, given };
}
