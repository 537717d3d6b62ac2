package fsm

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
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

// maxScrubLine bounds how much of one line is held in memory while scrubbing;
// a longer line is scrubbed in pieces of this size.
const maxScrubLine = 1 << 20

// scrubFile copies src to dst line by line through scrub, in bounded memory,
// and returns the bytes written.
func scrubFile(src, dst string, scrub func([]byte) []byte) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(in, maxScrubLine)
	w := bufio.NewWriter(out)
	var n int64
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			m, werr := w.Write(scrub(line))
			n += int64(m)
			if werr != nil {
				out.Close()
				return n, werr
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			out.Close()
			return n, err
		}
	}
	if err := w.Flush(); err != nil {
		out.Close()
		return n, err
	}
	return n, out.Close()
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
