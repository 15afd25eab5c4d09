import type { CommandDefinition } from '../cli/define-command.ts';
import ami from './ami.ts';
import attach from './attach.ts';
import checkpoints from './checkpoints.ts';
import gc from './gc.ts';
import gpus from './gpus.ts';
import logs from './logs.ts';
import ls from './ls.ts';
import prices from './prices.ts';
import ps from './ps.ts';
import run from './run.ts';
import stop from './stop.ts';
import teardown from './teardown.ts';

/** Every command, in the order --help lists them. */
export const commands = [run, attach, logs, ps, stop, checkpoints, prices, gpus, ls, teardown, gc, ami] as unknown as CommandDefinition[];
