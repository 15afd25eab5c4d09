/** Text for and from shells the controller runs commands in (locally, or on a host over ssh). */

/** POSIX single-quote quoting; words made only of safe characters stay as they are. */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The last meaningful line of a command's output, for one-line error messages: blank lines and
 * ssh's own noise (host-key banners, "Warning: Permanently added ...") are skipped.
 */
export function lastLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^@+$/.test(l) && !/^Warning: Permanently added/.test(l));
  return lines.at(-1) ?? '';
}
