#!/usr/bin/env node
// Entry point of the agent bundle (agent.mjs). Everything else lives in cli.ts.
import { main } from './cli.ts';

// The AWS SDK (checkpoint uploads) warns on Node < 22; the agent supports Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const code = await main(process.argv.slice(2));
// Explicit exit: the job's pipes and unref'd handles must not decide when the agent ends.
process.exit(code);
