/** Schema validators compiled on first use instead of at import time. */
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';

/**
 * `TypeCompiler.Compile(schema)`, deferred until the returned function is first called. Compiling
 * every schema of the protocol at import cost each agent process about 10 ms of its start-up (a
 * CPU profile of `agent.mjs start`), for validators a process may never call (`start` needs one).
 */
export function lazyCompile<T extends TSchema>(schema: T): () => TypeCheck<T> {
  let compiled: TypeCheck<T> | undefined;
  return () => (compiled ??= TypeCompiler.Compile(schema));
}
