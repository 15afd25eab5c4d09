#!/usr/bin/env node
// Entry point of the agent bundle (agent.mjs). Everything else lives in cli.ts.
import { main } from './cli.ts';

const code = await main(process.argv.slice(2));
// Explicit exit: the job's pipes and unref'd handles must not decide when the agent ends.
process.exit(code);
