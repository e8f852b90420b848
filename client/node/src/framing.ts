// FrameReader: cuts the sidecar's byte stream into size-prefixed frames, refusing oversized ones.
import { RateLimitProtocolError } from './errors';

// Bytes of the little-endian length in front of every frame's FlatBuffer.
export const FRAME_PREFIX_BYTES = 4;
// Largest payload accepted from the sidecar: the sidecar's default RATE_LIMIT_MAX_FRAME_BYTES.
// Its answers are a few dozen bytes, so anything near this is already garbage.
export const MAX_FRAME_BYTES = 64 * 1024;

// Feeds chunks of a stream in order; hands out each complete frame's payload (the FlatBuffer
// without its prefix). A frame split across chunks is assembled in a buffer allocated only after
// its length was checked, so a hostile length never causes a large allocation.
export class FrameReader {
  private readonly prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  private prefixHave = 0;
  private body: Buffer | null = null; // The payload being assembled, once its length is known.
  private bodyHave = 0;

  constructor(private readonly maxPayloadBytes: number = MAX_FRAME_BYTES) {}

  // Calls onFrame for every frame completed by `chunk`, in order. A payload that is a view of
  // `chunk` is valid only during the call. Throws RateLimitProtocolError for a length of 0 or
  // above the maximum; the stream is then unusable, since its frame boundaries are lost.
  feed(chunk: Buffer, onFrame: (payload: Buffer) => void): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.body !== null) {
        const take = Math.min(this.body.length - this.bodyHave, chunk.length - at);
        chunk.copy(this.body, this.bodyHave, at, at + take);
        this.bodyHave += take;
        at += take;
        if (this.bodyHave < this.body.length) return;
        const frame = this.body;
        this.body = null;
        onFrame(frame);
        continue;
      }
      if (this.prefixHave === 0 && chunk.length - at >= FRAME_PREFIX_BYTES) {
        const length = this.checkLength(chunk.readUInt32LE(at));
        at += FRAME_PREFIX_BYTES;
        if (chunk.length - at >= length) {
          // The common case: the whole frame is in this chunk, so no copy.
          onFrame(chunk.subarray(at, at + length));
          at += length;
        } else {
          this.startBody(length);
        }
        continue;
      }
      const take = Math.min(FRAME_PREFIX_BYTES - this.prefixHave, chunk.length - at);
      chunk.copy(this.prefix, this.prefixHave, at, at + take);
      this.prefixHave += take;
      at += take;
      if (this.prefixHave < FRAME_PREFIX_BYTES) return;
      this.prefixHave = 0;
      this.startBody(this.checkLength(this.prefix.readUInt32LE(0)));
    }
  }

  private startBody(length: number): void {
    this.body = Buffer.allocUnsafe(length);
    this.bodyHave = 0;
  }

  private checkLength(length: number): number {
    if (length === 0 || length > this.maxPayloadBytes) {
      throw new RateLimitProtocolError(
        `sidecar sent a frame of ${length} bytes; allowed are 1 to ${this.maxPayloadBytes}`,
      );
    }
    return length;
  }
}
