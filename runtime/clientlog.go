package runtime

import (
	"context"
	"fmt"
	"io"

	clog "github.com/containerd/log"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
)

// clientLogger routes what the containerd client logs (through logrus, e.g. a registry
// fetch that failed and is retried) into the worker's zerolog logger at warn level and
// above, instead of logrus's own format on stderr.
func clientLogger(z zerolog.Logger) *clog.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.WarnLevel)
	l.AddHook(zerologHook{z: z.With().Str("component", "containerd-client").Logger()})
	return logrus.NewEntry(l)
}

type zerologHook struct{ z zerolog.Logger }

func (zerologHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h zerologHook) Fire(e *logrus.Entry) error {
	ev := h.z.Warn()
	if e.Level <= logrus.ErrorLevel {
		ev = h.z.Error()
	}
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			ev = ev.AnErr(k, err)
		} else {
			ev = ev.Str(k, fmt.Sprint(v))
		}
	}
	ev.Msg(e.Message)
	return nil
}

// withClientLogger puts the client logger in ctx for containerd's log.G.
func withClientLogger(ctx context.Context, e *clog.Entry) context.Context {
	if e == nil {
		return ctx
	}
	return clog.WithLogger(ctx, e)
}
