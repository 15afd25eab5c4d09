/** Bearer-token check for every route, websocket upgrades included. */
import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Returns a checker for `Authorization` header values. Compares sha256 digests with
 * timingSafeEqual: equal-length inputs, so neither the token's bytes nor its length leak through
 * timing.
 */
export function createTokenCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token);
  return (authorization) => {
    if (authorization === undefined) return false;
    const m = /^Bearer\s+(.+)$/i.exec(authorization.trim());
    if (!m?.[1]) return false;
    return timingSafeEqual(digest(m[1]), expected);
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
