import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Help } from 'commander';
import { expect, it } from 'vitest';
import { commandTerm, commands } from './index.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

it('lists each command as its own file defines it: name, arguments and description', async () => {
  for (const entry of commands) {
    const def = await entry.load();
    const cmd = new Command(def.name).description(def.description);
    def.configure(cmd);
    expect({ name: def.name, term: new Help().subcommandTerm(cmd), description: def.description }).toEqual({
      name: entry.name,
      term: commandTerm(entry),
      description: entry.description,
    });
  }
});

it('registers every command file', () => {
  const files = readdirSync(here).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'index.ts');
  expect(commands.map((c) => `${c.name}.ts`).sort()).toEqual(files.sort());
});
