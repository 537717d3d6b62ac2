package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The binary record format.
//
// A log value is either a legacy JSON Record (its first byte is '{') or a
// binary record: the marker byte recordBinaryV1 (0x01) followed by one
// message in the protobuf wire format, written and read with protowire (no
// generated code). Without the marker the bytes are a plain protobuf message:
//
//	tail -c +2 record.bin | protoc --decode_raw
//
// Field numbers (wire type in brackets; a field whose value is the zero value
// or a nil pointer is not written):
//
//	Record
//	  1  seq        uint64 [varint]
//	  2  job        string [bytes]
//	  3  kind       string [bytes]
//	  4  at         Timestamp [bytes]   (absent: the zero time.Time)
//	  5  event      string [bytes]
//	  6  from       string [bytes]
//	  7  to         string [bytes]
//	  8  intent     string [bytes]
//	  9  tx         TxIntent [bytes]    (present, maybe empty, iff Tx != nil)
//	  10 container  ContainerIntent [bytes]
//	  11 op         OpIntent [bytes]
//	  12 upload     UploadIntent [bytes]
//	  13 fields     repeated FieldsEntry [bytes], in increasing key order
//	Timestamp (as google.protobuf.Timestamp)
//	  1  seconds    int64 [varint], since the Unix epoch
//	  2  nanos      int32 [varint], 0 ≤ nanos < 1e9
//	TxIntent
//	  1  instruction string, 2 signature string, 3 raw bytes,
//	  4  last_valid_block_height uint64 [varint]
//	ContainerIntent
//	  1  id string, 2 attempt int64 [varint], 3 deadline Timestamp,
//	  4  image string, 5 gpus repeated string, 6 cpus double [fixed64],
//	  7  memory_bytes int64 [varint]
//	OpIntent
//	  1  index int64 [varint]
//	UploadIntent
//	  1  what string, 2 cid string
//	FieldsEntry (the protobuf encoding of map<string, string>)
//	  1  key string, 2 value string
//
// Reading follows protobuf's rules: unknown field numbers are skipped (a
// later version may add fields), a scalar field that occurs twice keeps its
// last value, a message field that occurs twice is merged (its repeated gpus
// are appended), a Timestamp that occurs twice keeps the last one. A known
// field with the wrong wire type, a truncated tag, varint or length, a length
// past the end of the value, nanos out of range, or a string that is not
// valid UTF-8 is an error; nothing is allocated from a length field before
// the bytes it counts are known to be there.
//
// Strings. encoding/json writes each byte of a string that is not valid
// UTF-8 as U+FFFD; marshalRecord does the same, so a binary record always
// holds valid UTF-8 and the reader refuses one that does not (it was not
// written by marshalRecord). All string fields of one decoded binary record
// share one allocation.
//
// Round trip: unmarshalRecord(marshalRecord(r)) equals normalizeRecord(r).
const recordBinaryV1 = 0x01

// Record field numbers; see the table above.
const (
	recSeq       protowire.Number = 1
	recJob       protowire.Number = 2
	recKind      protowire.Number = 3
	recAt        protowire.Number = 4
	recEvent     protowire.Number = 5
	recFrom      protowire.Number = 6
	recTo        protowire.Number = 7
	recIntent    protowire.Number = 8
	recTx        protowire.Number = 9
	recContainer protowire.Number = 10
	recOp        protowire.Number = 11
	recUpload    protowire.Number = 12
	recFields    protowire.Number = 13
)

// errBinaryRecord is wrapped by every error about a malformed binary record.
var errBinaryRecord = errors.New("malformed binary record")

// marshalRecord encodes rec as a binary record: the marker byte 0x01 and the
// protobuf message of the table above. The bytes are deterministic (Fields in
// increasing key order). Invalid UTF-8 in strings is coerced as encoding/json
// does; times are written as UTC seconds and nanoseconds (monotonic readings
// and locations are dropped).
func marshalRecord(rec Record) []byte {
	n := 64 + len(rec.Job) + len(rec.Event) + len(rec.From) + len(rec.To) + len(rec.Intent) + len(rec.Kind)
	if rec.Tx != nil {
		n += len(rec.Tx.Raw) + len(rec.Tx.Signature) + len(rec.Tx.Instruction) + 16
	}
	for k, v := range rec.Fields {
		n += len(k) + len(v) + 6
	}
	b := make([]byte, 1, n)
	b[0] = recordBinaryV1
	if rec.Seq != 0 {
		b = protowire.AppendTag(b, recSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, rec.Seq)
	}
	b = appendString(b, recJob, rec.Job)
	b = appendString(b, recKind, string(rec.Kind))
	b = appendTime(b, recAt, rec.At)
	b = appendString(b, recEvent, rec.Event)
	b = appendString(b, recFrom, rec.From)
	b = appendString(b, recTo, rec.To)
	b = appendString(b, recIntent, rec.Intent)
	if tx := rec.Tx; tx != nil {
		b = appendMessage(b, recTx, func(m []byte) []byte {
			m = appendString(m, 1, tx.Instruction)
			m = appendString(m, 2, tx.Signature)
			if len(tx.Raw) > 0 {
				m = protowire.AppendTag(m, 3, protowire.BytesType)
				m = protowire.AppendBytes(m, tx.Raw)
			}
			return appendVarint(m, 4, tx.LastValidBlockHeight)
		})
	}
	if c := rec.Container; c != nil {
		b = appendMessage(b, recContainer, func(m []byte) []byte {
			m = appendString(m, 1, c.ID)
			m = appendVarint(m, 2, uint64(int64(c.Attempt)))
			m = appendTime(m, 3, c.Deadline)
			m = appendString(m, 4, c.Image)
			for _, g := range c.GPUs {
				m = protowire.AppendTag(m, 5, protowire.BytesType)
				m = protowire.AppendString(m, toValidUTF8(g))
			}
			if bits := math.Float64bits(c.CPUs); bits != 0 { // -0 is kept, as json keeps it
				m = protowire.AppendTag(m, 6, protowire.Fixed64Type)
				m = protowire.AppendFixed64(m, bits)
			}
			return appendVarint(m, 7, uint64(c.MemoryBytes))
		})
	}
	if op := rec.Op; op != nil {
		b = appendMessage(b, recOp, func(m []byte) []byte {
			return appendVarint(m, 1, uint64(int64(op.Index)))
		})
	}
	if u := rec.Upload; u != nil {
		b = appendMessage(b, recUpload, func(m []byte) []byte {
			m = appendString(m, 1, u.What)
			return appendString(m, 2, u.CID)
		})
	}
	if len(rec.Fields) > 0 {
		fields := normalizeFields(rec.Fields)
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := fields[k]
			b = protowire.AppendTag(b, recFields, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(sizeString(1, k)+sizeString(2, v)))
			b = appendString(b, 1, k)
			b = appendString(b, 2, v)
		}
	}
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, toValidUTF8(s))
}

// sizeString is the encoded size of appendString(nil, num, s) for valid s.
func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendTime writes t as a Timestamp message; the zero time is not written.
func appendTime(b []byte, num protowire.Number, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	secs, nanos := t.Unix(), t.Nanosecond()
	b = protowire.AppendTag(b, num, protowire.BytesType)
	size := 0
	if secs != 0 {
		size += 1 + protowire.SizeVarint(uint64(secs))
	}
	if nanos != 0 {
		size += 1 + protowire.SizeVarint(uint64(nanos))
	}
	b = protowire.AppendVarint(b, uint64(size))
	b = appendVarint(b, 1, uint64(secs))
	return appendVarint(b, 2, uint64(nanos))
}

// appendMessage writes the message that body appends, length-prefixed.
func appendMessage(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	// The body is written after a one-byte length placeholder and moved
	// when its length needs more bytes.
	at := len(b)
	b = append(b, 0)
	b = body(b)
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	lenBytes := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, lenBytes-1)...)
	copy(b[at+lenBytes:], b[at+1:at+1+n])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

// toValidUTF8 replaces each byte of s that is not part of valid UTF-8 with
// U+FFFD, as encoding/json does when it writes s.
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.WriteString(s[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// normalizeFields returns fields with keys and values coerced to valid
// UTF-8; when two keys coerce to the same one, the value of the greater
// original key wins (as encoding/json's sorted output, read back, gives).
func normalizeFields(fields map[string]string) map[string]string {
	valid := true
	for k, v := range fields {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			valid = false
			break
		}
	}
	if valid {
		return fields
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]string, len(fields))
	for _, k := range keys {
		out[toValidUTF8(k)] = toValidUTF8(fields[k])
	}
	return out
}

// normalizeRecord returns r as a binary round trip gives it back: times in
// UTC without monotonic reading (the zero time stays zero); strings coerced
// to valid UTF-8 as encoding/json coerces them; empty Raw, GPUs and Fields
// as nil. Pointers are copied, never shared with r.
func normalizeRecord(r Record) Record {
	r.Kind = Kind(toValidUTF8(string(r.Kind)))
	r.Job, r.Event, r.From, r.To, r.Intent = toValidUTF8(r.Job), toValidUTF8(r.Event), toValidUTF8(r.From), toValidUTF8(r.To), toValidUTF8(r.Intent)
	r.At = r.At.UTC()
	if r.Tx != nil {
		tx := *r.Tx
		tx.Instruction, tx.Signature = toValidUTF8(tx.Instruction), toValidUTF8(tx.Signature)
		if len(tx.Raw) == 0 {
			tx.Raw = nil
		} else {
			tx.Raw = slices.Clone(tx.Raw)
		}
		r.Tx = &tx
	}
	if r.Container != nil {
		c := *r.Container
		c.ID, c.Image = toValidUTF8(c.ID), toValidUTF8(c.Image)
		c.Deadline = c.Deadline.UTC()
		if len(c.GPUs) == 0 {
			c.GPUs = nil
		} else {
			gpus := make([]string, len(c.GPUs))
			for i, g := range c.GPUs {
				gpus[i] = toValidUTF8(g)
			}
			c.GPUs = gpus
		}
		r.Container = &c
	}
	if r.Op != nil {
		op := *r.Op
		r.Op = &op
	}
	if r.Upload != nil {
		u := *r.Upload
		u.What, u.CID = toValidUTF8(u.What), toValidUTF8(u.CID)
		r.Upload = &u
	}
	if len(r.Fields) == 0 {
		r.Fields = nil
	} else {
		r.Fields = maps.Clone(normalizeFields(r.Fields))
	}
	return r
}

// unmarshalRecord decodes a log value into *rec, which it overwrites: a
// legacy JSON record (first byte '{') with encoding/json, a binary record
// (first byte 0x01) as the table above says. Any other first byte, an empty
// value, or a malformed binary record is an error naming what is wrong; a
// malformed binary record's error wraps errBinaryRecord.
func unmarshalRecord(v []byte, rec *Record) error {
	*rec = Record{}
	if len(v) == 0 {
		return errors.New("empty record value")
	}
	switch v[0] {
	case '{':
		// Through a record of its own, so that rec does not escape through
		// the json path into the heap on the binary path too.
		tmp := new(Record)
		err := json.Unmarshal(v, tmp)
		*rec = *tmp
		return err
	case recordBinaryV1:
		d := recordDecoder{src: v}
		if err := d.record(rec, 1, len(v)); err != nil {
			return err
		}
		d.assign(rec)
		return nil
	default:
		return fmt.Errorf("record value starts with byte 0x%02x: neither a JSON record ('{') nor a binary record (0x01)", v[0])
	}
}

// String fields, as a strRef names them.
const (
	sJob uint8 = iota
	sKind
	sEvent
	sFrom
	sTo
	sIntent
	sTxInstruction
	sTxSignature
	sContainerID
	sContainerImage
	sContainerGPU
	sUploadWhat
	sUploadCID
	sFieldKey   // always followed by its sFieldValue
	sFieldValue //
)

// strRef is a string field found in the source: which field and where its
// bytes are. Strings are materialised after the walk, all in one allocation.
type strRef struct {
	field  uint8
	off, n int
}

// recordDecoder walks one binary record. Its strRefs are kept in a fixed
// array (then in more) so that a decoder on the stack stays there.
type recordDecoder struct {
	src  []byte
	refs [32]strRef
	n    int      // refs in use
	more []strRef // strRefs after the first len(refs)
}

func (d *recordDecoder) add(r strRef) {
	if d.n < len(d.refs) {
		d.refs[d.n] = r
		d.n++
		return
	}
	d.more = append(d.more, r)
}

// ref returns the i-th strRef added.
func (d *recordDecoder) ref(i int) strRef {
	if i < len(d.refs) {
		return d.refs[i]
	}
	return d.more[i-len(d.refs)]
}

func (d *recordDecoder) count() int { return d.n + len(d.more) }

func binErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBinaryRecord, fmt.Sprintf(format, args...))
}

// walk calls fn for every field of the message src[start:end]; for a
// bytes-type field, val is the offset of its bytes and n their length; for a
// varint or fixed64 field, x is its value. Every field's value has been
// consumed before fn sees it, so fn skips an unknown field by returning nil.
func (d *recordDecoder) walk(msg string, start, end int, fn func(num protowire.Number, typ protowire.Type, off, n int, x uint64) error) error {
	for i := start; i < end; {
		num, typ, n := protowire.ConsumeTag(d.src[i:end])
		if n < 0 {
			return binErr("%s: tag at byte %d: %v", msg, i, protowire.ParseError(n))
		}
		i += n
		var off, l int
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(d.src[i:end])
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(d.src[i:end])
		case protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(d.src[i:end])
			off, l = i+n-len(b), len(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, d.src[i:end])
		}
		if n < 0 {
			return binErr("%s: field %d at byte %d: %v", msg, num, i, protowire.ParseError(n))
		}
		if err := fn(num, typ, off, l, x); err != nil {
			return err
		}
		i += n
	}
	return nil
}

func wantType(msg string, num protowire.Number, typ, want protowire.Type) error {
	if typ != want {
		return binErr("%s: field %d has wire type %d, want %d", msg, num, typ, want)
	}
	return nil
}

// str records a string field after checking its type and UTF-8.
func (d *recordDecoder) str(msg string, num protowire.Number, typ protowire.Type, field uint8, off, n int) error {
	if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
		return err
	}
	if !utf8.Valid(d.src[off : off+n]) {
		return binErr("%s: field %d is not valid UTF-8", msg, num)
	}
	d.add(strRef{field, off, n})
	return nil
}

func (d *recordDecoder) record(rec *Record, start, end int) error {
	const msg = "record"
	return d.walk(msg, start, end, func(num protowire.Number, typ protowire.Type, off, n int, x uint64) error {
		switch num {
		case recSeq:
			rec.Seq = x
			return wantType(msg, num, typ, protowire.VarintType)
		case recJob:
			return d.str(msg, num, typ, sJob, off, n)
		case recKind:
			return d.str(msg, num, typ, sKind, off, n)
		case recAt:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			t, err := d.timestamp("record.at", off, off+n)
			rec.At = t
			return err
		case recEvent:
			return d.str(msg, num, typ, sEvent, off, n)
		case recFrom:
			return d.str(msg, num, typ, sFrom, off, n)
		case recTo:
			return d.str(msg, num, typ, sTo, off, n)
		case recIntent:
			return d.str(msg, num, typ, sIntent, off, n)
		case recTx:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			if rec.Tx == nil {
				rec.Tx = &TxIntent{}
			}
			return d.tx(rec.Tx, off, off+n)
		case recContainer:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			if rec.Container == nil {
				rec.Container = &ContainerIntent{}
			}
			return d.container(rec.Container, off, off+n)
		case recOp:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			if rec.Op == nil {
				rec.Op = &OpIntent{}
			}
			op := rec.Op
			return d.walk("record.op", off, off+n, func(num protowire.Number, typ protowire.Type, _, _ int, x uint64) error {
				if num != 1 {
					return nil
				}
				op.Index = int(int64(x))
				return wantType("record.op", num, typ, protowire.VarintType)
			})
		case recUpload:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			if rec.Upload == nil {
				rec.Upload = &UploadIntent{}
			}
			return d.walk("record.upload", off, off+n, func(num protowire.Number, typ protowire.Type, off, n int, _ uint64) error {
				switch num {
				case 1:
					return d.str("record.upload", num, typ, sUploadWhat, off, n)
				case 2:
					return d.str("record.upload", num, typ, sUploadCID, off, n)
				}
				return nil
			})
		case recFields:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			return d.fieldEntry(off, off+n)
		}
		return nil
	})
}

func (d *recordDecoder) fieldEntry(start, end int) error {
	const msg = "record.fields"
	key, value := strRef{field: sFieldKey}, strRef{field: sFieldValue}
	err := d.walk(msg, start, end, func(num protowire.Number, typ protowire.Type, off, n int, _ uint64) error {
		var ref *strRef
		switch num {
		case 1:
			ref = &key
		case 2:
			ref = &value
		default:
			return nil
		}
		if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
			return err
		}
		if !utf8.Valid(d.src[off : off+n]) {
			return binErr("%s: field %d is not valid UTF-8", msg, num)
		}
		ref.off, ref.n = off, n
		return nil
	})
	d.add(key)
	d.add(value)
	return err
}

func (d *recordDecoder) tx(tx *TxIntent, start, end int) error {
	const msg = "record.tx"
	return d.walk(msg, start, end, func(num protowire.Number, typ protowire.Type, off, n int, x uint64) error {
		switch num {
		case 1:
			return d.str(msg, num, typ, sTxInstruction, off, n)
		case 2:
			return d.str(msg, num, typ, sTxSignature, off, n)
		case 3:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			if n == 0 {
				tx.Raw = nil
			} else {
				tx.Raw = append([]byte(nil), d.src[off:off+n]...)
			}
			return nil
		case 4:
			tx.LastValidBlockHeight = x
			return wantType(msg, num, typ, protowire.VarintType)
		}
		return nil
	})
}

func (d *recordDecoder) container(c *ContainerIntent, start, end int) error {
	const msg = "record.container"
	return d.walk(msg, start, end, func(num protowire.Number, typ protowire.Type, off, n int, x uint64) error {
		switch num {
		case 1:
			return d.str(msg, num, typ, sContainerID, off, n)
		case 2:
			c.Attempt = int(int64(x))
			return wantType(msg, num, typ, protowire.VarintType)
		case 3:
			if err := wantType(msg, num, typ, protowire.BytesType); err != nil {
				return err
			}
			t, err := d.timestamp("record.container.deadline", off, off+n)
			c.Deadline = t
			return err
		case 4:
			return d.str(msg, num, typ, sContainerImage, off, n)
		case 5:
			return d.str(msg, num, typ, sContainerGPU, off, n)
		case 6:
			c.CPUs = math.Float64frombits(x)
			return wantType(msg, num, typ, protowire.Fixed64Type)
		case 7:
			c.MemoryBytes = int64(x)
			return wantType(msg, num, typ, protowire.VarintType)
		}
		return nil
	})
}

// timestamp decodes a Timestamp message as a UTC time.
func (d *recordDecoder) timestamp(msg string, start, end int) (time.Time, error) {
	var secs int64
	var nanos uint64
	err := d.walk(msg, start, end, func(num protowire.Number, typ protowire.Type, _, _ int, x uint64) error {
		switch num {
		case 1:
			secs = int64(x)
			return wantType(msg, num, typ, protowire.VarintType)
		case 2:
			nanos = x
			return wantType(msg, num, typ, protowire.VarintType)
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	if nanos >= 1e9 {
		return time.Time{}, binErr("%s: nanos %d out of range [0, 1e9)", msg, int64(nanos))
	}
	return time.Unix(secs, int64(nanos)).UTC(), nil
}

// assign materialises the strings the walk found, in the order found (a
// later occurrence of a field overwrites an earlier one), all sharing one
// allocation; well-known kinds and intents share none.
func (d *recordDecoder) assign(rec *Record) {
	total, entries, count := 0, 0, d.count()
	for i := range count {
		r := d.ref(i)
		total += r.n
		if r.field == sFieldKey {
			entries++
		}
	}
	var sb strings.Builder
	sb.Grow(total)
	for i := range count {
		r := d.ref(i)
		sb.Write(d.src[r.off : r.off+r.n])
	}
	arena := sb.String()
	if entries > 0 {
		rec.Fields = make(map[string]string, entries)
	}
	pos := 0
	for i := 0; i < count; i++ {
		r := d.ref(i)
		s := arena[pos : pos+r.n]
		pos += r.n
		switch r.field {
		case sJob:
			rec.Job = s
		case sKind:
			rec.Kind = Kind(s)
		case sEvent:
			rec.Event = s
		case sFrom:
			rec.From = s
		case sTo:
			rec.To = s
		case sIntent:
			rec.Intent = s
		case sTxInstruction:
			rec.Tx.Instruction = s
		case sTxSignature:
			rec.Tx.Signature = s
		case sContainerID:
			rec.Container.ID = s
		case sContainerImage:
			rec.Container.Image = s
		case sContainerGPU:
			rec.Container.GPUs = append(rec.Container.GPUs, s)
		case sUploadWhat:
			rec.Upload.What = s
		case sUploadCID:
			rec.Upload.CID = s
		case sFieldKey:
			i++
			v := d.ref(i)
			rec.Fields[s] = arena[pos : pos+v.n]
			pos += v.n
		}
	}
}
