// BufferVerifier: bounds checks on a FlatBuffer before the generated accessors read it.
//
// The FlatBuffers TypeScript runtime has no Verifier, and its accessors do not fail on a bad
// buffer: a read past the end yields undefined, which bit operations turn into 0, so a malformed
// answer would silently become a plausible decision. This checks every table, field and string
// the client reads against the buffer's bounds, in the same terms as the C++ Verifier, and throws
// RateLimitProtocolError otherwise. Alignment is not checked: the runtime reads byte by byte.
import { RateLimitProtocolError } from './errors';

// A table that passed the checks: where it is, and where its vtable says its fields are.
export interface VerifiedTable {
  readonly pos: number;
  readonly vtable: number;
  readonly vtableSize: number;
  readonly tableSize: number;
}

// The runtime reads vtable entries as signed 16-bit numbers; larger sizes would read as negative.
const MAX_VTABLE_ENTRY = 0x7fff;

export class BufferVerifier {
  constructor(private readonly bytes: Uint8Array) {}

  // The root table of a buffer without size prefix.
  root(): VerifiedTable {
    return this.table(this.uoffsetTarget(0));
  }

  table(pos: number): VerifiedTable {
    this.need(pos, 4, 'table');
    const vtable = pos - this.int32(pos);
    this.need(vtable, 4, 'vtable');
    const vtableSize = this.uint16(vtable);
    const tableSize = this.uint16(vtable + 2);
    if (vtableSize < 4 || vtableSize % 2 !== 0 || vtableSize > MAX_VTABLE_ENTRY) {
      this.fail(`vtable size ${vtableSize}`);
    }
    if (tableSize < 4 || tableSize > MAX_VTABLE_ENTRY) this.fail(`table size ${tableSize}`);
    this.need(vtable, vtableSize, 'vtable');
    this.need(pos, tableSize, 'table');
    return { pos, vtable, vtableSize, tableSize };
  }

  // Checks a scalar field of `size` bytes in slot `slot` (0 for the first field).
  scalar(table: VerifiedTable, slot: number, size: number): void {
    this.fieldOffset(table, slot, size);
  }

  // Checks a string field; absent is fine (the accessor then returns null).
  string(table: VerifiedTable, slot: number): void {
    const field = this.fieldOffset(table, slot, 4);
    if (field === 0) return;
    const pos = this.uoffsetTarget(table.pos + field);
    this.need(pos, 4, 'string length');
    const length = this.uint32(pos);
    // The bytes and the terminating zero the format requires.
    this.need(pos + 4, length + 1, 'string');
    if (this.bytes[pos + 4 + length] !== 0) this.fail('string without terminator');
  }

  // The table a table-valued field (or union value) points to, or null when absent.
  tableField(table: VerifiedTable, slot: number): VerifiedTable | null {
    const field = this.fieldOffset(table, slot, 4);
    if (field === 0) return null;
    return this.table(this.uoffsetTarget(table.pos + field));
  }

  // Where the field of `slot` starts relative to its table, or 0 when the field is absent.
  private fieldOffset(table: VerifiedTable, slot: number, size: number): number {
    const entry = 4 + 2 * slot;
    if (entry + 2 > table.vtableSize) return 0; // Written by an older schema: absent.
    const offset = this.uint16(table.vtable + entry);
    if (offset === 0) return 0;
    if (offset < 4 || offset + size > table.tableSize) this.fail(`field ${slot} out of its table`);
    return offset;
  }

  // The position an unsigned 32-bit offset stored at `pos` points to.
  private uoffsetTarget(pos: number): number {
    this.need(pos, 4, 'offset');
    const target = pos + this.uint32(pos);
    if (target >= this.bytes.length) this.fail('offset out of the buffer');
    return target;
  }

  private need(pos: number, size: number, what: string): void {
    if (pos < 0 || pos + size > this.bytes.length) this.fail(`${what} out of the buffer`);
  }

  private uint16(pos: number): number {
    return this.bytes[pos] | (this.bytes[pos + 1] << 8);
  }

  private int32(pos: number): number {
    const b = this.bytes;
    return b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16) | (b[pos + 3] << 24);
  }

  private uint32(pos: number): number {
    return this.int32(pos) >>> 0;
  }

  private fail(what: string): never {
    throw new RateLimitProtocolError(`sidecar sent a malformed frame: ${what}`);
  }
}
