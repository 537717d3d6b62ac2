package runtime_test

import (
	"testing"

	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestMain lets the test binary serve as the shim's log writer (Config.Logger defaults
// to the running executable).
func TestMain(m *testing.M) { runtimetest.Main(m) }
