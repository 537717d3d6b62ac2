package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "google.golang.org/protobuf/types/known/timestamppb" // registers google/protobuf/timestamp.proto
)

// recordDescriptor is the table of codec.go as a proto3 schema:
//
//	syntax = "proto3";
//	package hypernode.journal.v1;
//	import "google/protobuf/timestamp.proto";
//	message Record {
//	  uint64 seq = 1; string job = 2; string kind = 3; google.protobuf.Timestamp at = 4;
//	  string event = 5; string from = 6; string to = 7; string intent = 8;
//	  TxIntent tx = 9; ContainerIntent container = 10; OpIntent op = 11;
//	  UploadIntent upload = 12; map<string, string> fields = 13;
//	}
//	message TxIntent { string instruction = 1; string signature = 2; bytes raw = 3; uint64 last_valid_block_height = 4; }
//	message ContainerIntent {
//	  string id = 1; int64 attempt = 2; google.protobuf.Timestamp deadline = 3; string image = 4;
//	  repeated string gpus = 5; double cpus = 6; int64 memory_bytes = 7;
//	}
//	message OpIntent { int64 index = 1; }
//	message UploadIntent { string what = 1; string cid = 2; }
func recordDescriptor(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), JsonName: proto.String(name), Number: proto.Int32(num),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: typ.Enum(),
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	const (
		str   = descriptorpb.FieldDescriptorProto_TYPE_STRING
		msg   = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		u64   = descriptorpb.FieldDescriptorProto_TYPE_UINT64
		i64   = descriptorpb.FieldDescriptorProto_TYPE_INT64
		ts    = ".google.protobuf.Timestamp"
		pkg   = ".hypernode.journal.v1."
		bytes = descriptorpb.FieldDescriptorProto_TYPE_BYTES
	)
	fields := field("fields", 13, msg, pkg+"Record.FieldsEntry")
	fields.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	gpus := field("gpus", 5, str, "")
	gpus.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	file := &descriptorpb.FileDescriptorProto{
		Name: proto.String("hypernode/journal/v1/record.proto"), Package: proto.String("hypernode.journal.v1"),
		Syntax: proto.String("proto3"), Dependency: []string{"google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("Record"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("seq", 1, u64, ""), field("job", 2, str, ""), field("kind", 3, str, ""), field("at", 4, msg, ts),
					field("event", 5, str, ""), field("from", 6, str, ""), field("to", 7, str, ""), field("intent", 8, str, ""),
					field("tx", 9, msg, pkg+"TxIntent"), field("container", 10, msg, pkg+"ContainerIntent"),
					field("op", 11, msg, pkg+"OpIntent"), field("upload", 12, msg, pkg+"UploadIntent"), fields,
				},
				NestedType: []*descriptorpb.DescriptorProto{{
					Name:    proto.String("FieldsEntry"),
					Field:   []*descriptorpb.FieldDescriptorProto{field("key", 1, str, ""), field("value", 2, str, "")},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				}},
			},
			{Name: proto.String("TxIntent"), Field: []*descriptorpb.FieldDescriptorProto{
				field("instruction", 1, str, ""), field("signature", 2, str, ""), field("raw", 3, bytes, ""), field("last_valid_block_height", 4, u64, ""),
			}},
			{Name: proto.String("ContainerIntent"), Field: []*descriptorpb.FieldDescriptorProto{
				field("id", 1, str, ""), field("attempt", 2, i64, ""), field("deadline", 3, msg, ts), field("image", 4, str, ""),
				gpus, field("cpus", 6, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, ""), field("memory_bytes", 7, i64, ""),
			}},
			{Name: proto.String("OpIntent"), Field: []*descriptorpb.FieldDescriptorProto{field("index", 1, i64, "")}},
			{Name: proto.String("UploadIntent"), Field: []*descriptorpb.FieldDescriptorProto{field("what", 1, str, ""), field("cid", 2, str, "")}},
		},
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Record")
}

// TestRecordCodecIsProtobuf checks the binary format against the protobuf
// library itself: after the marker byte, marshalRecord writes exactly what
// protobuf writes (deterministically) for the schema documented in
// codec.go, and protobuf reads it back field for field.
func TestRecordCodecIsProtobuf(t *testing.T) {
	desc := recordDescriptor(t)
	check := func(name string, rec Record) {
		b := marshalRecord(rec)
		m := dynamicpb.NewMessage(desc)
		if err := proto.Unmarshal(b[1:], m); err != nil {
			t.Fatalf("%s: protobuf cannot read the record: %v\n%x", name, err, b)
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(again, b[1:]) {
			t.Fatalf("%s: protobuf writes\n%x\nmarshalRecord wrote\n%x", name, again, b[1:])
		}
		n := normalizeRecord(rec)
		get := func(path ...string) protoreflect.Value {
			msg := m.ProtoReflect()
			for _, p := range path[:len(path)-1] {
				msg = msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(p))).Message()
			}
			return msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(path[len(path)-1])))
		}
		if got := get("job").String(); got != n.Job {
			t.Fatalf("%s: protobuf reads job %q, want %q", name, got, n.Job)
		}
		if got := get("seq").Uint(); got != n.Seq {
			t.Fatalf("%s: seq %d, want %d", name, got, n.Seq)
		}
		if !n.At.IsZero() && (get("at", "seconds").Int() != n.At.Unix() || get("at", "nanos").Int() != int64(n.At.Nanosecond())) {
			t.Fatalf("%s: at %v, want %v", name, get("at"), n.At)
		}
		if n.Tx != nil && !bytes.Equal(get("tx", "raw").Bytes(), n.Tx.Raw) {
			t.Fatalf("%s: raw differs", name)
		}
		if n.Container != nil && get("container", "attempt").Int() != int64(n.Container.Attempt) {
			t.Fatalf("%s: attempt %d, want %d", name, get("container", "attempt").Int(), n.Container.Attempt)
		}
		if fm := get("fields").Map(); fm.Len() != len(n.Fields) {
			t.Fatalf("%s: %d fields, want %d", name, fm.Len(), len(n.Fields))
		}
		for k, v := range n.Fields {
			if got := get("fields").Map().Get(protoreflect.ValueOfString(k).MapKey()); got.String() != v {
				t.Fatalf("%s: field %q = %q, want %q", name, k, got, v)
			}
		}
	}
	for name, rec := range codecCases() {
		check(name, rec)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 1000 {
		check(fmt.Sprint("random ", i), randomRecord(r))
	}
}
