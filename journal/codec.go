package journal

import (
	"encoding/binary"
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
//	  13 fields     repeated FieldsEntry [bytes], in increasing key order,
//	                key and value written even when empty
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
// field with the wrong wire type, a field number 0, an end-group tag without
// its start, a truncated tag, varint or length, a length
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
// Numbers. cpus is written when its bits are not zero, so -0 survives as
// encoding/json keeps it; NaN and ±Inf (which encoding/json refuses to
// write) survive bit for bit. Times of any year survive (encoding/json
// writes years 0–9999 only).
//
// The bytes after the marker are exactly what the protobuf library writes,
// deterministically, for this table as a proto3 schema; the schema is
// written out in codec_proto_test.go, whose test checks that.
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
			// Key and value are written even when empty, as protobuf
			// writes map entries.
			b = protowire.AppendTag(b, recFields, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(2+protowire.SizeBytes(len(k))+protowire.SizeBytes(len(v))))
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, k)
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendString(b, v)
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
		return d.assign(rec)
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
	f    wireField // the field next read last
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

// wireField is one field of a message: for the bytes wire type, its bytes
// are src[off:off+n]; for varint and fixed64, x is its value. A field of any
// other wire type has been skipped over.
type wireField struct {
	num    protowire.Number
	typ    protowire.Type
	off, n int
	x      uint64
}

// next reads the field at src[i:end] (of message msg, for errors) into
// d.f and returns the offset after it. d.f is read before the next call
// (a nested message's decoding reuses it).
func (d *recordDecoder) next(msg string, i, end int) (int, error) {
	f := &d.f
	// Fast path: a one-byte tag of field 1..15 with a one-byte varint or
	// length, as most fields of a record are; anything else takes the
	// general path below.
	if i+1 < end {
		tag, b := d.src[i], d.src[i+1]
		if tag < 0x80 && tag>>3 != 0 && b < 0x80 {
			switch protowire.Type(tag & 7) {
			case protowire.VarintType:
				f.num, f.typ, f.off, f.n, f.x = protowire.Number(tag>>3), protowire.VarintType, 0, 0, uint64(b)
				return i + 2, nil
			case protowire.BytesType:
				if l := int(b); l <= end-i-2 {
					f.num, f.typ, f.off, f.n, f.x = protowire.Number(tag>>3), protowire.BytesType, i+2, l, 0
					return i + 2 + l, nil
				}
			}
		}
	}
	num, typ, n := protowire.ConsumeTag(d.src[i:end])
	if n < 0 {
		return 0, tagErr(msg, i, n)
	}
	f.num, f.typ, f.off, f.n, f.x = num, typ, 0, 0, 0
	i += n
	switch typ {
	case protowire.VarintType:
		f.x, n = protowire.ConsumeVarint(d.src[i:end])
	case protowire.Fixed64Type:
		f.x, n = protowire.ConsumeFixed64(d.src[i:end])
	case protowire.BytesType:
		var b []byte
		b, n = protowire.ConsumeBytes(d.src[i:end])
		f.off, f.n = i+n-len(b), len(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, d.src[i:end])
	}
	if n < 0 {
		return 0, valueErr(msg, num, i, n)
	}
	return i + n, nil
}

// want checks f's wire type.
func (f *wireField) want(msg string, typ protowire.Type) error {
	if f.typ != typ {
		return typeErr(msg, f.num, f.typ, typ)
	}
	return nil
}

// The errors of next and want, out of line so that the decoding loop's
// frames stay small.

//go:noinline
func tagErr(msg string, at, code int) error {
	return binErr("%s: tag at byte %d: %v", msg, at, protowire.ParseError(code))
}

//go:noinline
func valueErr(msg string, num protowire.Number, at, code int) error {
	return binErr("%s: field %d at byte %d: %v", msg, num, at, protowire.ParseError(code))
}

//go:noinline
func typeErr(msg string, num protowire.Number, typ, want protowire.Type) error {
	return binErr("%s: field %d has wire type %d, want %d", msg, num, typ, want)
}

// str records a string field after checking its type; its UTF-8 is
// checked by assign.
func (d *recordDecoder) str(msg string, f *wireField, field uint8) error {
	if err := f.want(msg, protowire.BytesType); err != nil {
		return err
	}
	d.add(strRef{field, f.off, f.n})
	return nil
}

// record decodes the Record message src[i:end]. Every loop over a
// message's fields below skips a field number it does not know.
func (d *recordDecoder) record(rec *Record, i, end int) error {
	const msg = "record"
	f := &d.f
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case recSeq:
			err = f.want(msg, protowire.VarintType)
			rec.Seq = f.x
		case recJob:
			err = d.str(msg, f, sJob)
		case recKind:
			err = d.str(msg, f, sKind)
		case recAt:
			if err = f.want(msg, protowire.BytesType); err == nil {
				rec.At, err = d.timestamp("record.at", f.off, f.off+f.n)
			}
		case recEvent:
			err = d.str(msg, f, sEvent)
		case recFrom:
			err = d.str(msg, f, sFrom)
		case recTo:
			err = d.str(msg, f, sTo)
		case recIntent:
			err = d.str(msg, f, sIntent)
		case recTx:
			if err = f.want(msg, protowire.BytesType); err == nil {
				if rec.Tx == nil {
					rec.Tx = &TxIntent{}
				}
				err = d.tx(rec.Tx, f.off, f.off+f.n)
			}
		case recContainer:
			if err = f.want(msg, protowire.BytesType); err == nil {
				if rec.Container == nil {
					rec.Container = &ContainerIntent{}
				}
				err = d.container(rec.Container, f.off, f.off+f.n)
			}
		case recOp:
			if err = f.want(msg, protowire.BytesType); err == nil {
				if rec.Op == nil {
					rec.Op = &OpIntent{}
				}
				err = d.op(rec.Op, f.off, f.off+f.n)
			}
		case recUpload:
			if err = f.want(msg, protowire.BytesType); err == nil {
				if rec.Upload == nil {
					rec.Upload = &UploadIntent{}
				}
				err = d.upload(f.off, f.off+f.n)
			}
		case recFields:
			if err = f.want(msg, protowire.BytesType); err == nil {
				err = d.fieldEntry(f.off, f.off+f.n)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *recordDecoder) fieldEntry(i, end int) error {
	const msg = "record.fields"
	f := &d.f
	key, value := strRef{field: sFieldKey}, strRef{field: sFieldValue}
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		var ref *strRef
		switch f.num {
		case 1:
			ref = &key
		case 2:
			ref = &value
		default:
			continue
		}
		if err := f.want(msg, protowire.BytesType); err != nil {
			return err
		}
		ref.off, ref.n = f.off, f.n
	}
	d.add(key)
	d.add(value)
	return nil
}

func (d *recordDecoder) tx(tx *TxIntent, i, end int) error {
	const msg = "record.tx"
	f := &d.f
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			err = d.str(msg, f, sTxInstruction)
		case 2:
			err = d.str(msg, f, sTxSignature)
		case 3:
			if err = f.want(msg, protowire.BytesType); err == nil {
				tx.Raw = nil
				if f.n > 0 {
					tx.Raw = append([]byte(nil), d.src[f.off:f.off+f.n]...)
				}
			}
		case 4:
			err = f.want(msg, protowire.VarintType)
			tx.LastValidBlockHeight = f.x
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *recordDecoder) container(c *ContainerIntent, i, end int) error {
	const msg = "record.container"
	f := &d.f
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			err = d.str(msg, f, sContainerID)
		case 2:
			err = f.want(msg, protowire.VarintType)
			c.Attempt = int(int64(f.x))
		case 3:
			if err = f.want(msg, protowire.BytesType); err == nil {
				c.Deadline, err = d.timestamp("record.container.deadline", f.off, f.off+f.n)
			}
		case 4:
			err = d.str(msg, f, sContainerImage)
		case 5:
			err = d.str(msg, f, sContainerGPU)
		case 6:
			err = f.want(msg, protowire.Fixed64Type)
			c.CPUs = math.Float64frombits(f.x)
		case 7:
			err = f.want(msg, protowire.VarintType)
			c.MemoryBytes = int64(f.x)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *recordDecoder) op(op *OpIntent, i, end int) error {
	const msg = "record.op"
	f := &d.f
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		if f.num == 1 {
			if err := f.want(msg, protowire.VarintType); err != nil {
				return err
			}
			op.Index = int(int64(f.x))
		}
	}
	return nil
}

func (d *recordDecoder) upload(i, end int) error {
	const msg = "record.upload"
	f := &d.f
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			err = d.str(msg, f, sUploadWhat)
		case 2:
			err = d.str(msg, f, sUploadCID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// timestamp decodes a Timestamp message as a UTC time.
func (d *recordDecoder) timestamp(msg string, i, end int) (time.Time, error) {
	f := &d.f
	var secs int64
	var nanos uint64
	for i < end {
		next, err := d.next(msg, i, end)
		if err != nil {
			return time.Time{}, err
		}
		i = next
		switch f.num {
		case 1:
			err = f.want(msg, protowire.VarintType)
			secs = int64(f.x)
		case 2:
			err = f.want(msg, protowire.VarintType)
			nanos = f.x
		}
		if err != nil {
			return time.Time{}, err
		}
	}
	if nanos >= 1e9 {
		return time.Time{}, binErr("%s: nanos %d out of range [0, 1e9)", msg, int64(nanos))
	}
	return time.Unix(secs, int64(nanos)).UTC(), nil
}

// strNames name the string fields in errors.
var strNames = [...]string{
	sJob: "record.job", sKind: "record.kind", sEvent: "record.event", sFrom: "record.from", sTo: "record.to",
	sIntent: "record.intent", sTxInstruction: "record.tx.instruction", sTxSignature: "record.tx.signature",
	sContainerID: "record.container.id", sContainerImage: "record.container.image", sContainerGPU: "record.container.gpus",
	sUploadWhat: "record.upload.what", sUploadCID: "record.upload.cid", sFieldKey: "record.fields key", sFieldValue: "record.fields value",
}

// assign materialises the strings the walk found, in the order found (a
// later occurrence of a field overwrites an earlier one), all sharing one
// allocation, after checking that each is valid UTF-8.
func (d *recordDecoder) assign(rec *Record) error {
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
	if !isASCII(arena) { // else every string is valid UTF-8
		pos := 0
		for i := range count {
			r := d.ref(i)
			if !utf8.ValidString(arena[pos : pos+r.n]) {
				return binErr("%s is not valid UTF-8", strNames[r.field])
			}
			pos += r.n
		}
	}
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
	return nil
}

// isASCII reports whether s has no byte ≥ 0x80, eight bytes at a time.
func isASCII(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if binary.LittleEndian.Uint64([]byte(s[i:i+8]))&0x8080808080808080 != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Snapshots. A jobs/<job> value is either a legacy JSON Snapshot ('{',
// schemas 1 and 2) or, from schema 3, a binary record (the format above)
// carrying the snapshot's fields: seq = LastSeq, job = Job, at = Updated,
// to = State, and tx, container, op, upload and fields as they are; kind and
// the other strings are absent.

// marshalSnapshot encodes s in the binary format.
func marshalSnapshot(s Snapshot) []byte {
	return marshalRecord(Record{Seq: s.LastSeq, Job: s.Job, At: s.Updated, To: s.State,
		Tx: s.Tx, Container: s.Container, Op: s.Op, Upload: s.Upload, Fields: s.Fields})
}

// unmarshalSnapshot decodes a jobs/ value of either format into *s, which
// it overwrites.
func unmarshalSnapshot(v []byte, s *Snapshot) error {
	if len(v) > 0 && v[0] == '{' {
		*s = Snapshot{}
		return json.Unmarshal(v, s)
	}
	var r Record
	if err := unmarshalRecord(v, &r); err != nil {
		return err
	}
	if r.Kind != "" || r.Event != "" || r.From != "" || r.Intent != "" {
		return fmt.Errorf("%w: a record, not a snapshot", errBinaryRecord)
	}
	*s = Snapshot{Job: r.Job, State: r.To, LastSeq: r.Seq, Updated: r.At,
		Tx: r.Tx, Container: r.Container, Op: r.Op, Upload: r.Upload, Fields: r.Fields}
	return nil
}

// prepared is a record encoded before its sequence number is known, so that
// an appender encodes its own record outside the commit: body is
// marshalRecord of the record with Seq 0 (which writes no seq field), rec the
// record as body decodes (storeRecord).
type prepared struct {
	rec  Record
	body []byte
}

// prepare encodes rec without its sequence number; its error is
// storeRecord's.
func prepare(rec Record) (prepared, error) {
	rec.Seq = 0
	b, stored, err := storeRecord(rec)
	return prepared{rec: stored, body: b}, err
}

// withSeq returns the log value of the record under sequence number seq and
// the record as stored. The value is byte for byte marshalRecord's: the seq
// field comes first, right after the marker.
func (p prepared) withSeq(seq uint64) ([]byte, Record) {
	b := make([]byte, 0, len(p.body)+1+protowire.SizeVarint(seq))
	b = append(b, p.body[0])
	b = protowire.AppendTag(b, recSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, seq)
	b = append(b, p.body[1:]...)
	r := p.rec
	r.Seq = seq
	return b, r
}
