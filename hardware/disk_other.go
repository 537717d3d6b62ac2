//go:build !unix

package hardware

import (
	"errors"
	"runtime"
)

func diskFree(string) (uint64, error) {
	return 0, errors.New("free space is not measured on " + runtime.GOOS)
}
