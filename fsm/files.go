package fsm

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"

	"github.com/hypernode-sol/worker/jobdef"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// writeFileAtomic writes data to path via a synced temporary file and rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// scrubFile copies src to dst through a jobdef.ScrubWriter (which catches
// a secret split across reads), in bounded memory, and returns the bytes read.
func scrubFile(src, dst string, secrets []jobdef.Secret) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriter(out)
	sw := jobdef.NewScrubWriter(w, secrets)
	n, err := io.Copy(sw, in)
	if err == nil {
		err = sw.Close()
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// readTail returns at most the last n bytes of a file.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := info.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, info.Size()-off)
	_, err = f.ReadAt(buf, off)
	if err == io.EOF {
		err = nil
	}
	return buf, err
}
