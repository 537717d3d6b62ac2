package runtime

import (
	"regexp"
	"testing"
)

func TestSysfsBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:81:00.0": "0000:81:00.0", // nvidia-smi
		"0000:83:00.0":     "0000:83:00.0", // rocm-smi
		"0000:C3:00.1":     "0000:c3:00.1",
		" 0000:83:00.0\n":  "0000:83:00.0",
		"":                 "",
		"83:00.0":          "",
		"0000:83:00.8":     "",
		"0000:83/../00.0":  "",
		"00:83:00.0":       "",
	} {
		if got := sysfsBusID(in); got != want {
			t.Errorf("sysfsBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSysfsBusID: whatever the vendor tool wrote, the result is "" or a
// plain sysfs PCI address (it becomes a path under /sys).
func FuzzSysfsBusID(f *testing.F) {
	for _, s := range []string{"00000000:81:00.0", "0000:83:00.0", "../../etc", "0000:83:00.0/../x"} {
		f.Add(s)
	}
	plain := regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
	f.Fuzz(func(t *testing.T, s string) {
		if got := sysfsBusID(s); got != "" && !plain.MatchString(got) {
			t.Fatalf("sysfsBusID(%q) = %q", s, got)
		}
	})
}
