// Connection: one Unix socket to the sidecar with many requests in flight, matched by id.
import * as net from 'node:net';

import { Reply, decodeReply } from './codec';
import {
  RateLimitError,
  RateLimitProtocolError,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
} from './errors';
import { FrameReader } from './framing';
import { errorResponseError } from './status';

// Connecting: requests queue until the socket connects.
// Open: requests are written, all those of one tick in one write.
// Closing: the sidecar said it closes this connection (an ErrorResponse, or the end of its
//   stream): no new requests; answers still arriving are read, and once no request is pending
//   the client closes it, whether the sidecar has or not.
// Closed: the socket is gone and every request still pending has failed.
enum State {
  Connecting,
  Open,
  Closing,
  Closed,
}

// The kind of answer a request must get; anything else is a protocol error.
export type ReplyKind = 'check' | 'ping';
// The answer of that kind.
export type ReplyOf<K extends ReplyKind> = Extract<Reply, { kind: K }>;

interface Pending {
  expects: ReplyKind;
  resolve(reply: Reply): void;
  reject(error: RateLimitError): void;
  timer: NodeJS.Timeout;
}

export interface ConnectionOptions {
  socketPath: string;
  // Bounds each request, from send() to its answer, connecting included; and the connect.
  timeoutMs: number;
}

// While the sidecar's listen backlog is full, connect fails with EAGAIN; try again this often
// until the connect timeout, as the C++ client does.
const CONNECT_RETRY_MS = 1;

// Owned by one RateLimitClient, on the event loop's thread like all of Node's I/O. Owns its socket
// and every request sent on it until answered, timed out or failed.
// A request is written once and never again: once it may have reached the sidecar it may have
// spent tokens. The socket is unref'd while nothing is pending, so an idle connection never keeps
// the process alive.
export class Connection {
  private state = State.Connecting;
  private socket: net.Socket | null = null;
  private readonly pending = new Map<number, Pending>();
  // Requests not written yet, in order; those that timed out meanwhile are skipped, never sent.
  private outbox: { id: number; frame: Buffer }[] = [];
  private flushScheduled = false;
  private highestIdSent = 0;
  private readonly reader = new FrameReader();
  private connectTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  // Why the connection is going away, given to the requests still pending when it is gone.
  private failure: RateLimitError | null = null;
  private resolveClosed!: () => void;
  // Resolves once the socket is closed (at once if it never opened).
  readonly closed = new Promise<void>((resolve) => (this.resolveClosed = resolve));

  constructor(private readonly options: ConnectionOptions) {
    this.connectTimer = setTimeout(() => {
      this.fail(
        new RateLimitTimeoutError(
          `could not connect to the sidecar at ${options.socketPath} within ${options.timeoutMs} ms`,
        ),
      );
    }, options.timeoutMs);
    this.openSocket();
  }

  // Whether send() may be called.
  get usable(): boolean {
    return this.state === State.Connecting || this.state === State.Open;
  }

  // Sends one request frame and resolves with its answer, of kind `expects`, or rejects with a
  // RateLimitError. ErrorResponse answers are rejections too. REQUIRES: usable; ids strictly
  // increasing.
  send<K extends ReplyKind>(id: number, frame: Buffer, expects: K): Promise<ReplyOf<K>> {
    return new Promise<ReplyOf<K>>((resolve, reject) => {
      const timer = setTimeout(() => this.expire(id), this.options.timeoutMs);
      // settle() resolves only with a reply of kind `expects`.
      this.pending.set(id, { expects, resolve: resolve as (reply: Reply) => void, reject, timer });
      if (this.pending.size === 1) this.socket?.ref();
      this.outbox.push({ id, frame });
      if (this.state === State.Open) this.scheduleFlush();
    });
  }

  // Fails every pending request with `error` at once, drops what was not written yet, and closes
  // the socket.
  close(error: RateLimitError): Promise<void> {
    this.fail(error);
    return this.closed;
  }

  private openSocket(): void {
    this.retryTimer = null;
    const socket = net.createConnection({ path: this.options.socketPath });
    this.socket = socket;
    if (this.pending.size === 0) socket.unref();
    socket.on('connect', () => this.onConnect());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.failure ??= new RateLimitUnavailableError('the sidecar closed the connection');
      this.transitionTo(State.Closing);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => this.onSocketError(socket, error));
    socket.on('close', () => {
      if (socket !== this.socket) return; // A socket given up for a retry.
      this.transitionTo(State.Closed);
      this.resolveClosed();
    });
  }

  private onConnect(): void {
    if (this.state !== State.Connecting) return;
    this.transitionTo(State.Open);
    this.flush();
  }

  private onSocketError(socket: net.Socket, error: NodeJS.ErrnoException): void {
    if (this.state === State.Connecting && error.code === 'EAGAIN') {
      // Nothing was sent on this socket, so a new one may be tried; the connect timer ends the
      // attempts. The old socket's 'close' is ignored.
      this.socket = null;
      socket.destroy();
      this.retryTimer = setTimeout(() => this.openSocket(), CONNECT_RETRY_MS);
      return;
    }
    const what =
      this.state === State.Connecting
        ? `cannot connect to the sidecar at ${this.options.socketPath}`
        : 'connection to the sidecar failed';
    this.failure ??= new RateLimitUnavailableError(
      `${what}: ${error.code ?? error.message}`,
      undefined,
      { cause: error },
    );
    // 'close' follows and fails what is pending.
  }

  private onData(chunk: Buffer): void {
    try {
      this.reader.feed(chunk, (payload) => this.onReply(decodeReply(payload)));
    } catch (error) {
      this.fail(
        error instanceof RateLimitError
          ? error
          : new RateLimitProtocolError(`cannot read the sidecar's answer: ${String(error)}`),
      );
    }
  }

  private onReply(reply: Reply): void {
    if (reply.kind === 'error') {
      // The sidecar refused the connection, or a frame (id 0 when it could not even read the
      // id). It closes the connection after answering what it read before: keep reading until
      // then, and send nothing more.
      const error = errorResponseError(reply.status, reply.message);
      if (!this.settle(reply.id, undefined, error)) this.failure ??= error;
      this.transitionTo(State.Closing);
      return;
    }
    const expects = this.pending.get(reply.id)?.expects;
    if (expects === reply.kind) {
      this.settle(reply.id, reply, undefined);
    } else if (expects !== undefined) {
      throw new RateLimitProtocolError(`sidecar answered a ${expects} with a ${reply.kind} frame`);
    } else if (reply.id === 0 || reply.id > this.highestIdSent) {
      throw new RateLimitProtocolError(
        `sidecar answered id ${reply.id}, which this connection never sent`,
      );
    }
    // Otherwise the late answer to a request that timed out: dropped.
  }

  // Resolves or rejects the pending request `id`. False when none is pending.
  private settle(id: number, reply: Reply | undefined, error: RateLimitError | undefined): boolean {
    const request = this.pending.get(id);
    if (request === undefined) return false;
    this.pending.delete(id);
    clearTimeout(request.timer);
    if (error !== undefined) request.reject(error);
    else request.resolve(reply!);
    if (this.pending.size === 0) this.onIdle();
    return true;
  }

  // Nothing is pending: an open idle connection must not keep the process alive, and one the
  // sidecar is closing has nothing left to wait for.
  private onIdle(): void {
    if (this.state === State.Closing) this.transitionTo(State.Closed);
    else this.socket?.unref();
  }

  private expire(id: number): void {
    this.settle(
      id,
      undefined,
      new RateLimitTimeoutError(`no answer from the sidecar within ${this.options.timeoutMs} ms`),
    );
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the current tick, so all requests made by one burst of callbacks share one write.
    process.nextTick(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.state !== State.Open || this.outbox.length === 0) return;
    const frames: Buffer[] = [];
    for (const { id, frame } of this.outbox) {
      if (!this.pending.has(id)) continue; // Timed out before it could be sent: never send it.
      frames.push(frame);
      this.highestIdSent = id;
    }
    this.outbox = [];
    if (frames.length === 0) return;
    // Answers are small and requests bounded by the callers' concurrency and timeouts, so what
    // the kernel does not take at once is left to the stream's own buffer.
    this.socket!.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
  }

  private fail(error: RateLimitError): void {
    this.failure ??= error;
    this.transitionTo(State.Closed);
  }

  // The one place the state changes.
  private transitionTo(next: State): void {
    if (this.state === State.Closed || this.state === next) return;
    this.state = next;
    switch (next) {
      case State.Open:
        this.clearConnectTimers();
        return;
      case State.Closing:
        if (this.pending.size === 0) this.transitionTo(State.Closed);
        return;
      case State.Connecting: // The initial state, never entered again.
        return;
      case State.Closed: {
        this.clearConnectTimers();
        this.outbox = [];
        const error =
          this.failure ?? new RateLimitUnavailableError('the connection to the sidecar closed');
        for (const id of [...this.pending.keys()]) this.settle(id, undefined, error);
        // The socket's 'close' resolves `closed`; without a socket nothing is left to wait for.
        if (this.socket === null) this.resolveClosed();
        else this.socket.destroy();
        return;
      }
    }
  }

  private clearConnectTimers(): void {
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.connectTimer = null;
    this.retryTimer = null;
  }
}
