// RateLimitClient: asks the sidecar for decisions over a few pipelined Unix-socket connections.
import { FrameEncoder } from './codec';
import { Connection, ReplyKind, ReplyOf } from './connection';
import { RateLimitUnavailableError } from './errors';
import { checkResult } from './status';
import { CheckOptions, CheckResult, PingResult } from './types';
import { OnUnavailable, checkOnUnavailable, unavailableResult } from './unavailable';
import { integerOption, keyBytes, uint32 } from './validate';

// The sidecar's own default socket, used when neither the options nor RATE_LIMIT_SOCKET name one.
export const DEFAULT_SOCKET_PATH = '/var/run/ratelimit/ratelimit.sock';
// Above the sidecar's own waits for PostgreSQL (RATE_LIMIT_PG_TIMEOUT_MS, 250 ms by default, up to
// about twice that for a queued check), so that with the PostgreSQL store the sidecar's
// RATE_LIMIT_FALLBACK answers rather than this timeout. The C++ client's default too.
export const DEFAULT_TIMEOUT_MS = 1000;
// One pipelined connection carries tens of thousands of checks per second; more did not help in
// the benchmark (README).
export const DEFAULT_CONNECTIONS = 1;

// sockaddr_un's path holds 107 bytes and a terminating zero.
const MAX_SOCKET_PATH_BYTES = 107;
const MAX_CONNECTIONS = 64;
const MAX_TIMEOUT_MS = 2 ** 31 - 1; // setTimeout's limit.

export interface RateLimitClientOptions {
  // Default: $RATE_LIMIT_SOCKET when set and not empty, else DEFAULT_SOCKET_PATH.
  socketPath?: string;
  // Longest wait for an answer, connecting included; default DEFAULT_TIMEOUT_MS.
  timeoutMs?: number;
  // Connections opened (lazily) and used in turn; default DEFAULT_CONNECTIONS, at most 64.
  connections?: number;
  // What check() does when no decision can be had: 'throw' (default) rejects with the error;
  // 'allow' resolves allowed, 'deny' resolves denied with retryAfterMs
  // UNAVAILABLE_RETRY_AFTER_MS (1000), both with source 'unavailable'. A check's own
  // onUnavailable option overrides it.
  onUnavailable?: OnUnavailable;
}

// Asks the sidecar "may this key spend this many tokens?".
//
//   const client = new RateLimitClient({ timeoutMs: 100 });
//   const r = await client.check('api-key-123', { limit: 100, windowMs: 60_000 });
//   if (!r.allowed) reply429(r.retryAfterMs);
//
// Results and errors: a denial is a result (allowed false). A rejection is a RateLimitError:
// RateLimitUnavailableError when no decision could be had (no sidecar, connection lost, the
// sidecar cannot decide now), its subclass RateLimitTimeoutError after timeoutMs,
// RateLimitInvalidRequestError for a request that can never pass, RateLimitProtocolError for an
// answer that cannot be read. With onUnavailable 'allow' or 'deny' (the client's or the
// check's), the no-decision cases (all but RateLimitInvalidRequestError) resolve instead.
//
// Connections are opened on first use and shared by all calls: concurrent calls are pipelined,
// and answers are matched to requests by id, in whatever order they come. A connection that
// breaks fails the requests in flight on it and is dropped; the next call opens a new one, so a
// restarted sidecar is picked up by itself. A request is never sent twice, since a check that
// may have reached the sidecar may have spent tokens. Idle connections do not keep the process
// alive; close() ends everything.
export class RateLimitClient {
  readonly socketPath: string;
  readonly timeoutMs: number;
  readonly onUnavailable: OnUnavailable;
  private readonly slots: (Connection | null)[];
  // Every connection whose socket is not closed yet, including replaced ones still finishing.
  private readonly live = new Set<Connection>();
  private nextSlot = 0;
  private nextId = 1;
  private readonly encoder = new FrameEncoder();
  private closed = false;

  // Throws TypeError or RangeError for invalid options.
  constructor(options: RateLimitClientOptions = {}) {
    const fromEnv = process.env['RATE_LIMIT_SOCKET'];
    this.socketPath = options.socketPath ?? (fromEnv ? fromEnv : DEFAULT_SOCKET_PATH);
    if (typeof this.socketPath !== 'string') throw new TypeError('socketPath must be a string');
    const pathBytes = Buffer.byteLength(this.socketPath);
    if (pathBytes === 0 || pathBytes > MAX_SOCKET_PATH_BYTES) {
      throw new RangeError(`socketPath must be 1 to ${MAX_SOCKET_PATH_BYTES} bytes`);
    }
    this.timeoutMs = integerOption(
      'timeoutMs',
      options.timeoutMs,
      DEFAULT_TIMEOUT_MS,
      1,
      MAX_TIMEOUT_MS,
    );
    const connections = integerOption(
      'connections',
      options.connections,
      DEFAULT_CONNECTIONS,
      1,
      MAX_CONNECTIONS,
    );
    this.slots = new Array<Connection | null>(connections).fill(null);
    this.onUnavailable = checkOnUnavailable(options.onUnavailable) ?? 'throw';
  }

  // Spends `cost` tokens of `key`'s bucket if it holds that many. The key is 1 to 512 bytes of
  // UTF-8; cost, limit and windowMs are integers from 0 to 2^32 - 1. An invalid argument
  // rejects with RateLimitInvalidRequestError (an invalid onUnavailable with TypeError) whatever
  // onUnavailable says: it is the caller's mistake, not an outage.
  async check(key: string, options: CheckOptions = {}): Promise<CheckResult> {
    const bytes = keyBytes(key);
    const cost = uint32('cost', options.cost, 1);
    const limit = uint32('limit', options.limit, 0);
    const windowMs = uint32('windowMs', options.windowMs, 0);
    const onUnavailable = checkOnUnavailable(options.onUnavailable) ?? this.onUnavailable;
    try {
      const reply = await this.roundTrip('check', (id) =>
        this.encoder.check(id, bytes, cost, limit, windowMs),
      );
      return checkResult(reply.status, reply.result);
    } catch (error) {
      return unavailableResult(onUnavailable, limit, error);
    }
  }

  // Whether the sidecar answers, and whether its store is ready.
  async ping(): Promise<PingResult> {
    const reply = await this.roundTrip('ping', (id) => this.encoder.ping(id));
    return reply.ping;
  }

  // Fails every pending call with RateLimitUnavailableError at once (so their handlers should be
  // attached before awaiting close()), closes every connection, and fails later calls the same
  // way. Resolves when the sockets are closed. Leaves no timer behind.
  close(): Promise<void> {
    this.closed = true;
    this.slots.fill(null);
    const error = new RateLimitUnavailableError('the client was closed');
    return Promise.all([...this.live].map((c) => c.close(error))).then(() => undefined);
  }

  private roundTrip<K extends ReplyKind>(
    expects: K,
    encode: (id: number) => Buffer,
  ): Promise<ReplyOf<K>> {
    if (this.closed) throw new RateLimitUnavailableError('the client was closed');
    const id = this.nextId++;
    return this.connection().send(id, encode(id), expects);
  }

  // The next connection in turn, opened if its slot is empty or its connection is going away.
  private connection(): Connection {
    const slot = this.nextSlot;
    this.nextSlot = (slot + 1) % this.slots.length;
    const current = this.slots[slot];
    if (current != null && current.usable) return current;
    const connection = new Connection({ socketPath: this.socketPath, timeoutMs: this.timeoutMs });
    // Live until its socket is closed, so that close() waits for every socket.
    this.live.add(connection);
    void connection.closed.then(() => this.live.delete(connection));
    this.slots[slot] = connection;
    return connection;
  }
}
