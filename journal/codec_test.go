package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// v1LogValues returns the log values of testdata/journal-v1.db: JSON
// records written by the schema-1 code.
func v1LogValues(tb testing.TB) [][]byte {
	tb.Helper()
	db, err := bolt.Open("testdata/journal-v1.db", 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var vals [][]byte
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLog).ForEach(func(_, v []byte) error {
			vals = append(vals, bytes.Clone(v))
			return nil
		})
	})
	if err != nil || len(vals) == 0 {
		tb.Fatalf("%d values, %v", len(vals), err)
	}
	return vals
}

var codecAt = time.Date(2026, 11, 29, 22, 52, 15, 123456789, time.FixedZone("CET", 3600))

// codecCases cover every field of Record, empty and nil forms, and strings
// that are not valid UTF-8.
func codecCases() map[string]Record {
	raw := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x7f}, 50)
	return map[string]Record{
		"zero":     {},
		"seq only": {Seq: 1},
		"transition": {Seq: 42, Job: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU", Kind: KindTransition, At: codecAt,
			Event: "claim", From: "polled", To: "claimed",
			Fields: map[string]string{"claim_sig": "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW", "slot": "123456", "reason": ""}},
		"work_job intent": {Seq: 43, Job: "job", Kind: KindIntent, At: codecAt, Intent: IntentTx,
			Tx: &TxIntent{Instruction: "work_job", Signature: "sig", Raw: raw, LastValidBlockHeight: math.MaxUint64}},
		"empty tx":      {Job: "j", Kind: KindIntent, Tx: &TxIntent{}},
		"empty raw":     {Job: "j", Kind: KindIntent, Tx: &TxIntent{Raw: []byte{}}},
		"zero-byte raw": {Job: "j", Tx: &TxIntent{Raw: []byte{0}}},
		"container": {Seq: 9, Job: "j", Kind: KindIntent, Intent: IntentContainer, At: time.Unix(0, 0),
			Container: &ContainerIntent{ID: "hn-j-1", Attempt: 1, Deadline: codecAt.Add(time.Hour), Image: "docker.io/library/busybox:1.36",
				GPUs: []string{"GPU-0f3c", "", "amd:1"}, CPUs: 2.5, MemoryBytes: 8 << 30}},
		"container negatives": {Job: "j", Container: &ContainerIntent{Attempt: -3, CPUs: math.Copysign(0, -1), MemoryBytes: -1,
			Deadline: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}},
		"container empty gpus": {Job: "j", Container: &ContainerIntent{GPUs: []string{}}},
		"empty container":      {Job: "j", Container: &ContainerIntent{}},
		"op":                   {Job: "j", Kind: KindIntent, Intent: IntentOp, Op: &OpIntent{Index: 3}},
		"op zero":              {Job: "j", Op: &OpIntent{}},
		"op negative":          {Job: "j", Op: &OpIntent{Index: math.MinInt64}},
		"upload":               {Job: "j", Kind: KindIntent, Intent: IntentUpload, Upload: &UploadIntent{What: "result", CID: "bafkreigh2akiscaildc"}},
		"empty upload":         {Job: "j", Upload: &UploadIntent{}},
		"empty fields":         {Job: "j", Fields: map[string]string{}},
		"empty key":            {Job: "j", Fields: map[string]string{"": "", "a": ""}},
		"before epoch":         {Job: "j", At: time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		"year 1 nanos":         {Job: "j", At: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
		"monotonic":            {Job: "j", At: time.Now()},
		"zero time in zone":    {Job: "j", At: time.Time{}.In(time.FixedZone("X", 7200))},
		"unicode":              {Job: "jöb ✓ \u2028", Event: "日本", Fields: map[string]string{"κλειδί": "τιμή"}},
		"invalid utf8": {Job: "a\xffb", Kind: "\xe2\x82", Event: "\xed\xa0\x80", Tx: &TxIntent{Signature: "\xc0"},
			Container: &ContainerIntent{GPUs: []string{"\xff\xfe"}}, Upload: &UploadIntent{CID: "x\x80"},
			Fields: map[string]string{"k\xff": "v\xfe", "k\xfe": "w", "ok": "\xff"}},
		"all": {Seq: math.MaxUint64, Job: "j", Kind: KindProgress, At: codecAt, Event: "e", From: "f", To: "t", Intent: "i",
			Tx:        &TxIntent{Instruction: "finish_job", Signature: "s", Raw: []byte("raw"), LastValidBlockHeight: 1},
			Container: &ContainerIntent{ID: "c", Attempt: 2, Deadline: codecAt, Image: "img", GPUs: []string{"g"}, CPUs: 0.001, MemoryBytes: 1},
			Op:        &OpIntent{Index: 1}, Upload: &UploadIntent{What: "log", CID: "cid"}, Fields: map[string]string{"op.0.exit": "0"}},
	}
}

// randomRecord draws a record whose every field may be set; strings are
// mostly ASCII, sometimes any bytes.
func randomRecord(r *rand.Rand) Record {
	str := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		b := make([]byte, r.IntN(40))
		for i := range b {
			if r.IntN(20) == 0 {
				b[i] = byte(r.UintN(256))
			} else {
				b[i] = byte(' ' + r.IntN(95))
			}
		}
		return string(b)
	}
	tm := func() time.Time {
		if r.IntN(4) == 0 {
			return time.Time{}
		}
		// Years 1..9999: what encoding/json can write.
		secs := r.Int64N(253402300799+62135596800) - 62135596800
		zone := time.FixedZone("z", (r.IntN(48)-24)*1800)
		return time.Unix(secs, r.Int64N(1e9)).In(zone)
	}
	u64 := func() uint64 {
		if r.IntN(2) == 0 {
			return 0
		}
		return r.Uint64() >> r.UintN(64)
	}
	rec := Record{Seq: u64(), Job: str(), Kind: Kind(str()), At: tm(), Event: str(), From: str(), To: str(), Intent: str()}
	if r.IntN(2) == 0 {
		var raw []byte
		if n := r.IntN(400) - 50; n >= 0 {
			raw = make([]byte, n)
			for i := range raw {
				raw[i] = byte(r.UintN(256))
			}
		}
		rec.Tx = &TxIntent{Instruction: str(), Signature: str(), Raw: raw, LastValidBlockHeight: u64()}
	}
	if r.IntN(2) == 0 {
		c := &ContainerIntent{ID: str(), Attempt: int(int64(u64())), Deadline: tm(), Image: str(), MemoryBytes: int64(u64())}
		for range r.IntN(4) - 1 {
			c.GPUs = append(c.GPUs, str())
		}
		if r.IntN(2) == 0 {
			c.CPUs = r.NormFloat64() * 100
		}
		rec.Container = c
	}
	if r.IntN(3) == 0 {
		rec.Op = &OpIntent{Index: int(int64(u64()))}
	}
	if r.IntN(3) == 0 {
		rec.Upload = &UploadIntent{What: str(), CID: str()}
	}
	if n := r.IntN(6) - 1; n >= 0 {
		rec.Fields = map[string]string{}
		for range n {
			rec.Fields[str()] = str()
		}
	}
	return rec
}

// checkRoundTrip asserts that rec survives a binary round trip as
// normalizeRecord says, and that encoding/json cannot tell the two apart.
func checkRoundTrip(t *testing.T, name string, rec Record) {
	t.Helper()
	b := marshalRecord(rec)
	if b[0] != recordBinaryV1 {
		t.Fatalf("%s: first byte 0x%02x", name, b[0])
	}
	var got Record
	if err := unmarshalRecord(b, &got); err != nil {
		t.Fatalf("%s: unmarshal: %v\nbytes %x", name, err, b)
	}
	want := normalizeRecord(rec)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: round trip\n got %#v\nwant %#v", name, got, want)
	}
	gj, err1 := json.Marshal(got)
	wj, err2 := json.Marshal(want)
	oj, err3 := json.Marshal(rec)
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("%s: json: %v %v %v", name, err1, err2, err3)
	}
	if !bytes.Equal(gj, wj) {
		t.Fatalf("%s: json differs\n got %s\nwant %s", name, gj, wj)
	}
	// normalizeRecord changes nothing JSON shows, except that colliding
	// coerced keys are resolved (encoding/json would write both).
	var fromJSON Record
	if err := json.Unmarshal(oj, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if nj, _ := json.Marshal(normalizeRecord(fromJSON)); !bytes.Equal(nj, gj) {
		t.Fatalf("%s: json of the original, read back, differs\n got %s\nwant %s", name, gj, nj)
	}
	if again := marshalRecord(got); !bytes.Equal(again, b) {
		t.Fatalf("%s: re-encoding differs\n%x\n%x", name, b, again)
	}
	// An appender's encoding without the seq, given its seq in the commit,
	// is the same bytes and the same stored record.
	prep, err := prepare(rec)
	if err != nil {
		t.Fatalf("%s: prepare: %v", name, err)
	}
	for _, seq := range []uint64{1, 127, 128, 1 << 40, rec.Seq} {
		if seq == 0 {
			continue
		}
		withSeq := rec
		withSeq.Seq = seq
		wantB, wantRec, err := storeRecord(withSeq)
		if err != nil {
			t.Fatal(err)
		}
		gotB, gotRec := prep.withSeq(seq)
		if !bytes.Equal(gotB, wantB) || !reflect.DeepEqual(gotRec, wantRec) {
			t.Fatalf("%s: prepared with seq %d\n got %x %#v\nwant %x %#v", name, seq, gotB, gotRec, wantB, wantRec)
		}
	}
}

func TestRecordCodecRoundTrip(t *testing.T) {
	for name, rec := range codecCases() {
		checkRoundTrip(t, name, rec)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		checkRoundTrip(t, fmt.Sprintf("random %d", i), randomRecord(r))
	}
}

// TestRecordCodecLegacyRecords reads the JSON records of a journal written
// by older code: unmarshalRecord reads each as encoding/json does, and each
// survives the binary round trip.
func TestRecordCodecLegacyRecords(t *testing.T) {
	for i, v := range v1LogValues(t) {
		var got, want Record
		if err := unmarshalRecord(v, &got); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if err := json.Unmarshal(v, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d: got %#v want %#v", i, got, want)
		}
		checkRoundTrip(t, fmt.Sprint("v1 record ", i), got)
	}
}

func TestRecordCodecDetails(t *testing.T) {
	// Fields are written in key order: the bytes do not depend on map order.
	rec := Record{Job: "j", Fields: map[string]string{}}
	for i := range 50 {
		rec.Fields[fmt.Sprint("k", i)] = "v"
	}
	first := marshalRecord(rec)
	for range 20 {
		if !bytes.Equal(marshalRecord(rec), first) {
			t.Fatal("marshalRecord is not deterministic")
		}
	}
	// The zero time is not written and reads back as the zero time; the
	// epoch is written (an empty Timestamp) and reads back as the epoch.
	var got Record
	if err := unmarshalRecord(marshalRecord(Record{Job: "j"}), &got); err != nil || !got.At.IsZero() {
		t.Fatalf("zero time: %v %v", got.At, err)
	}
	if b := marshalRecord(Record{At: time.Unix(0, 0)}); !bytes.Equal(b, []byte{1, 4<<3 | 2, 0}) {
		t.Fatalf("epoch encodes as %x", b)
	}
	if err := unmarshalRecord([]byte{1, 4<<3 | 2, 0}, &got); err != nil || got.At.IsZero() || got.At.Unix() != 0 || got.At.Location() != time.UTC {
		t.Fatalf("epoch: %v %v", got.At, err)
	}
	// NaN survives bit for bit (encoding/json cannot write it).
	nan := math.Float64frombits(0x7ff8000000000001)
	if err := unmarshalRecord(marshalRecord(Record{Container: &ContainerIntent{CPUs: nan}}), &got); err != nil || math.Float64bits(got.Container.CPUs) != 0x7ff8000000000001 {
		t.Fatalf("NaN: %v %v", got.Container, err)
	}
	// A long message body (length prefix of more than one byte).
	long := Record{Job: "j", Tx: &TxIntent{Raw: bytes.Repeat([]byte{7}, 70000), Signature: strings.Repeat("s", 200)}}
	checkRoundTrip(t, "long", long)
	// A legacy JSON record reads as encoding/json reads it, into a reset record.
	legacy, _ := json.Marshal(codecCases()["all"])
	got = Record{Job: "stale", Fields: map[string]string{"stale": "1"}}
	if err := unmarshalRecord(legacy, &got); err != nil {
		t.Fatal(err)
	}
	var want Record
	_ = json.Unmarshal(legacy, &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("legacy json\n got %#v\nwant %#v", got, want)
	}
	// Decoding overwrites what was there.
	got = Record{Job: "stale", Fields: map[string]string{"stale": "1"}, Op: &OpIntent{Index: 9}}
	if err := unmarshalRecord(marshalRecord(Record{Seq: 3}), &got); err != nil || !reflect.DeepEqual(got, Record{Seq: 3}) {
		t.Fatalf("binary into a used record: %#v %v", got, err)
	}
}

// rawRecord builds a binary record from protowire pieces.
func rawRecord(parts ...[]byte) []byte {
	return append([]byte{recordBinaryV1}, bytes.Join(parts, nil)...)
}

func tagB(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
func lenB(v []byte) []byte                                 { return protowire.AppendBytes(nil, v) }
func varB(v uint64) []byte                                 { return protowire.AppendVarint(nil, v) }

func TestRecordCodecForwardCompatible(t *testing.T) {
	// Unknown fields of every wire type, at top level and inside messages,
	// are skipped.
	unknown := bytes.Join([][]byte{
		tagB(99, protowire.VarintType), varB(1 << 40),
		tagB(100, protowire.BytesType), lenB([]byte("future")),
		tagB(101, protowire.Fixed32Type), {1, 2, 3, 4},
		tagB(102, protowire.Fixed64Type), {1, 2, 3, 4, 5, 6, 7, 8},
		tagB(103, protowire.StartGroupType), tagB(1, protowire.VarintType), varB(5), tagB(103, protowire.EndGroupType),
	}, nil)
	tx := bytes.Join([][]byte{unknown, tagB(2, protowire.BytesType), lenB([]byte("sig"))}, nil)
	v := rawRecord(unknown, tagB(recJob, protowire.BytesType), lenB([]byte("j")), tagB(recTx, protowire.BytesType), lenB(tx), unknown)
	var got Record
	if err := unmarshalRecord(v, &got); err != nil {
		t.Fatal(err)
	}
	if want := (Record{Job: "j", Tx: &TxIntent{Signature: "sig"}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v want %#v", got, want)
	}
	// Protobuf's rules for repeated occurrences: a scalar keeps its last
	// value, a message is merged.
	v = rawRecord(tagB(recJob, protowire.BytesType), lenB([]byte("a")), tagB(recJob, protowire.BytesType), lenB([]byte("b")),
		tagB(recContainer, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(1, protowire.BytesType), lenB([]byte("id")), tagB(5, protowire.BytesType), lenB([]byte("g0"))}, nil)),
		tagB(recContainer, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(2, protowire.VarintType), varB(4), tagB(5, protowire.BytesType), lenB([]byte("g1"))}, nil)),
		tagB(recFields, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(1, protowire.BytesType), lenB([]byte("k")), tagB(2, protowire.BytesType), lenB([]byte("1"))}, nil)),
		tagB(recFields, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(2, protowire.BytesType), lenB([]byte("2")), tagB(1, protowire.BytesType), lenB([]byte("k"))}, nil)),
	)
	if err := unmarshalRecord(v, &got); err != nil {
		t.Fatal(err)
	}
	want := Record{Job: "b", Container: &ContainerIntent{ID: "id", Attempt: 4, GPUs: []string{"g0", "g1"}}, Fields: map[string]string{"k": "2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v want %#v", got, want)
	}
}

func TestRecordCodecRefusesMalformed(t *testing.T) {
	good := marshalRecord(codecCases()["all"])
	cases := []struct {
		name string
		v    []byte
		want string // in the error
	}{
		{"empty", nil, "empty"},
		{"unknown marker", []byte{0x02, 0x08, 0x01}, "0x02"},
		{"json garbage", []byte("{nope"), "invalid character"},
		{"truncated tag", rawRecord([]byte{0x80}), "tag at byte 1"},
		{"field number 0", rawRecord([]byte{0x00}), "tag"},
		{"truncated varint", rawRecord(tagB(recSeq, protowire.VarintType), []byte{0xff, 0xff}), "field 1"},
		{"varint overflow", rawRecord(tagB(recSeq, protowire.VarintType), bytes.Repeat([]byte{0xff}, 10), []byte{1}), "field 1"},
		{"length past end", rawRecord(tagB(recJob, protowire.BytesType), varB(1<<62), []byte("abc")), "field 2"},
		{"length past end of submessage", rawRecord(tagB(recTx, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(3, protowire.BytesType), varB(100)}, nil)), bytes.Repeat([]byte{0}, 100)), "record.tx: field 3"},
		{"wrong wire type", rawRecord(tagB(recJob, protowire.VarintType), varB(1)), "field 2 has wire type 0"},
		{"wrong wire type in message", rawRecord(tagB(recOp, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(1, protowire.Fixed64Type), make([]byte, 8)}, nil))), "record.op: field 1 has wire type 1"},
		{"stray end group", rawRecord(tagB(50, protowire.EndGroupType)), "field 50"},
		{"invalid utf8", rawRecord(tagB(recJob, protowire.BytesType), lenB([]byte{0xff})), "not valid UTF-8"},
		{"invalid utf8 field key", rawRecord(tagB(recFields, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(1, protowire.BytesType), lenB([]byte{0xc0})}, nil))), "record.fields key is not valid UTF-8"},
		{"nanos out of range", rawRecord(tagB(recAt, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(2, protowire.VarintType), varB(1e9)}, nil))), "nanos"},
		{"negative nanos", rawRecord(tagB(recAt, protowire.BytesType), lenB(bytes.Join([][]byte{tagB(2, protowire.VarintType), varB(uint64(math.MaxUint64))}, nil))), "nanos"},
		{"truncated record", good[:len(good)-1], "malformed binary record"},
	}
	for _, c := range cases {
		var rec Record
		err := unmarshalRecord(c.v, &rec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if c.v != nil && c.v[0] == recordBinaryV1 && !errors.Is(err, errBinaryRecord) {
			t.Errorf("%s: %v does not wrap errBinaryRecord", c.name, err)
		}
	}
	// Every truncation of a good record is refused or decodes, never panics.
	for i := 1; i < len(good); i++ {
		var rec Record
		_ = unmarshalRecord(good[:i], &rec)
	}
}

// FuzzUnmarshalRecord feeds arbitrary log values to unmarshalRecord: it
// never panics, and a value it accepts encodes to a binary record that
// decodes to the same record (after normalisation, for a JSON value) and
// re-encodes to the same bytes.
//
//	go test ./journal -run '^$' -fuzz FuzzUnmarshalRecord -fuzztime 60s -fuzzminimizetime 0
//
// (without -fuzzminimizetime 0 the fuzzer pauses for seconds at a time to
// minimise new inputs)
func FuzzUnmarshalRecord(f *testing.F) {
	for _, rec := range codecCases() {
		f.Add(marshalRecord(rec))
		j, _ := json.Marshal(rec)
		f.Add(j)
	}
	for _, v := range v1LogValues(f) {
		f.Add(v)
		var rec Record
		if err := json.Unmarshal(v, &rec); err != nil {
			f.Fatal(err)
		}
		f.Add(marshalRecord(rec))
	}
	f.Add([]byte(`{"seq":1,"job":"j","at":"2026-01-02T03:04:05.6+02:00","fields":{"a":"\ud800"},"tx":{"raw":""}}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		var rec Record
		if err := unmarshalRecord(v, &rec); err != nil {
			return
		}
		b := marshalRecord(rec)
		var back Record
		if err := unmarshalRecord(b, &back); err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%x", err, b)
		}
		if again := marshalRecord(back); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs\n%x\n%x", b, again)
		}
		want := normalizeRecord(rec)
		if rec.Container != nil && math.IsNaN(rec.Container.CPUs) {
			want.Container.CPUs, back.Container.CPUs = 0, 0 // NaN != NaN; the bytes were compared above
		}
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("round trip\n got %#v\nwant %#v", back, want)
		}
	})
}

// BenchmarkRecordCodec compares decoding (and encoding) a typical record
// with encoding/json (the legacy format) and as a binary record.
//
//	go test ./journal -run '^$' -bench RecordCodec -benchmem
func BenchmarkRecordCodec(b *testing.B) {
	raw := make([]byte, 300)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	records := map[string]Record{
		"intent": {Seq: 123456, Job: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU", Kind: KindIntent, At: codecAt, Intent: IntentTx,
			Tx: &TxIntent{Instruction: "work_job", Signature: "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW", Raw: raw, LastValidBlockHeight: 312345678}},
		"transition": {Seq: 123457, Job: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU", Kind: KindTransition, At: codecAt,
			Event: "claim", From: "polled", To: "claimed",
			Fields: map[string]string{"claim_sig": "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW", "slot": "312345000", "market": "9pGuRZ5ayKcQXk5bRWtCgwu7ok2ceH7CDWVp8PwUqQd"}},
	}
	for _, name := range []string{"intent", "transition"} {
		rec := records[name]
		j, err := json.Marshal(rec)
		if err != nil {
			b.Fatal(err)
		}
		bin := marshalRecord(rec)
		b.Run(name+"/json", func(b *testing.B) {
			b.SetBytes(int64(len(j)))
			b.ReportAllocs()
			for b.Loop() {
				var r Record
				if err := json.Unmarshal(j, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/binary", func(b *testing.B) {
			b.SetBytes(int64(len(bin)))
			b.ReportAllocs()
			for b.Loop() {
				var r Record
				if err := unmarshalRecord(bin, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Encoding, for appendTx's share.
		b.Run(name+"/encode-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/encode-binary", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				marshalRecord(rec)
			}
		})
	}
}

// BenchmarkLogWalkDecode walks a bbolt log of 50 000 records (the mix of
// replay: intents with ~300-byte raw transactions and transitions with
// fields), decoding each, as JSON and as binary records: the share of
// replay --verify that the codec decides, per record.
//
//	go test ./journal -run '^$' -bench LogWalkDecode -benchmem
func BenchmarkLogWalkDecode(b *testing.B) {
	const n = 50000
	raw := make([]byte, 300)
	for i := range raw {
		raw[i] = byte(i * 13)
	}
	recs := make([]Record, 4)
	for i := range recs {
		recs[i] = Record{Job: fmt.Sprintf("7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJo%05d", i), At: codecAt}
	}
	recs[0].Kind, recs[0].Intent, recs[0].Tx = KindIntent, IntentTx, &TxIntent{Instruction: "work_job", Signature: strings.Repeat("5VERv8NM", 11), Raw: raw, LastValidBlockHeight: 312345678}
	recs[1].Kind, recs[1].Event, recs[1].From, recs[1].To = KindTransition, "claim", "polled", "claimed"
	recs[1].Fields = map[string]string{"claim_sig": strings.Repeat("5VERv8NM", 11), "slot": "312345000", "market": "9pGuRZ5ayKcQXk5bRWtCgwu7ok2ceH7CDWVp8PwUqQd"}
	recs[2].Kind, recs[2].Intent, recs[2].Container = KindIntent, IntentContainer, &ContainerIntent{ID: "hn-x-1", Attempt: 1, Deadline: codecAt, Image: "docker.io/library/busybox:1.36", GPUs: []string{"GPU-0f3c"}}
	recs[3].Kind, recs[3].Fields = KindProgress, map[string]string{"op.0.exit": "0"}
	for _, format := range []string{"json", "binary"} {
		db, err := bolt.Open(filepath.Join(b.TempDir(), format+".db"), 0o600, &bolt.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			log, err := tx.CreateBucket(bucketLog)
			if err != nil {
				return err
			}
			log.FillPercent = 1 // keys are appended in order
			for seq := uint64(1); seq <= n; seq++ {
				rec := recs[seq%uint64(len(recs))]
				rec.Seq = seq
				v := marshalRecord(rec)
				if format == "json" {
					if v, err = json.Marshal(rec); err != nil {
						return err
					}
				}
				if err := log.Put(seqKey(seq), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(format, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				err := db.View(func(tx *bolt.Tx) error {
					c := tx.Bucket(bucketLog).Cursor()
					count := 0
					for k, v := c.First(); k != nil; k, v = c.Next() {
						var rec Record
						if err := unmarshalRecord(v, &rec); err != nil {
							return err
						}
						if rec.Seq != binary.BigEndian.Uint64(k) {
							return fmt.Errorf("record %d under key %x", rec.Seq, k)
						}
						count++
					}
					if count != n {
						return fmt.Errorf("%d records", count)
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}
