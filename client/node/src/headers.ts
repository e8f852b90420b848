// The RateLimit-Policy and RateLimit header fields of draft-ietf-httpapi-ratelimit-headers-08.
//
// That revision (7 October 2024) defines both fields as Structured Field Lists of items named by
// a String, with Integer parameters:
//   RateLimit-Policy: "default";q=100;w=60   q: quota (the bucket's capacity), w: window, seconds
//   RateLimit: "default";r=42;t=30           r: remaining quota, t: seconds until the quota resets
// Seconds are whole (the draft has no sub-second precision) and rounded up, so a client that
// waits them out is never early. When Retry-After is sent too, t names the same moment (draft
// section 5).

export const RATELIMIT_HEADERS_DRAFT = 'draft-ietf-httpapi-ratelimit-headers-08';

// A policy name as a Structured Field String: printable ASCII, with `"` and `\` escaped.
// Throws TypeError for a name a String cannot carry.
export function policyItem(name: string): string {
  if (typeof name !== 'string' || !/^[\x20-\x7e]*$/.test(name)) {
    throw new TypeError('policy name must be printable ASCII');
  }
  return `"${name.replace(/[\\"]/g, '\\$&')}"`;
}

// Whole seconds in `ms`, rounded up.
export function secondsUp(ms: number): number {
  return Math.ceil(ms / 1000);
}

// Retry-After for a denial: at least 1, since 0 invites an immediate retry that fails again.
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, secondsUp(retryAfterMs));
}

// `item` is a policyItem(). The window is left out when unknown (the sidecar's default policy):
// w is optional in the draft.
export function rateLimitPolicyField(item: string, quota: number, windowMs?: number): string {
  return windowMs === undefined || windowMs === 0
    ? `${item};q=${quota}`
    : `${item};q=${quota};w=${secondsUp(windowMs)}`;
}

export function rateLimitField(item: string, remaining: number, resetSeconds: number): string {
  return `${item};r=${remaining};t=${resetSeconds}`;
}
